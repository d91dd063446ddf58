package cgroup

import (
	"errors"
	"reflect"
	"testing"
)

// This project's machines: v1 controllers beside an empty v2 mount, the
// agent's memory cgroup nested, the rest at the root.
const v1Mountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const v1Self = `9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/3c9d
2:cpuacct:/
1:cpu:/
0::/
`

func TestDetectV1BesideEmptyV2(t *testing.T) {
	ms, err := ParseMountinfo([]byte(v1Mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	self, err := ParseSelf([]byte(v1Self))
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	l, err := Detect(ms, self, func(dir string) []string { asked = append(asked, dir); return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{Version: 1, Dirs: map[string]string{
		Memory: "/sys/fs/cgroup/memory/process_api/3c9d", Pids: "/sys/fs/cgroup/pids",
		CPU: "/sys/fs/cgroup/cpu", CPUAcct: "/sys/fs/cgroup/cpuacct", Freezer: "/sys/fs/cgroup/freezer",
	}}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("layout %+v, want %+v", l, want)
	}
	if !reflect.DeepEqual(asked, []string{"/sys/fs/cgroup/unified"}) {
		t.Errorf("v2 controllers asked of %v", asked)
	}
}

func TestDetectV2(t *testing.T) {
	ms, err := ParseMountinfo([]byte("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"))
	if err != nil {
		t.Fatal(err)
	}
	self, _ := ParseSelf([]byte("0::/system.slice/shi.service\n"))
	l, err := Detect(ms, self, func(dir string) []string {
		if dir != "/sys/fs/cgroup/system.slice/shi.service" {
			t.Errorf("asked %s", dir)
		}
		return []string{"cpuset", "cpu", "io", "memory", "pids"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != 2 || l.Unified != "/sys/fs/cgroup/system.slice/shi.service" {
		t.Fatalf("layout %+v", l)
	}
	// Without memory in v2 and no v1: nothing to contain with.
	if _, err := Detect(ms, self, func(string) []string { return []string{"cpu", "pids"} }); !errors.Is(err, ErrNoControllers) {
		t.Fatalf("v2 without memory: %v", err)
	}
}

func TestDetectCoMountedAndSubtree(t *testing.T) {
	// cpu,cpuacct in one hierarchy; memory mounted from a subtree (a
	// container's view), which holds only paths below its root.
	mi := `1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 /ctr /cg/memory rw - cgroup cgroup rw,memory
3 0 0:3 / /cg/pids rw - cgroup cgroup rw,pids
`
	ms, err := ParseMountinfo([]byte(mi))
	if err != nil {
		t.Fatal(err)
	}
	self, _ := ParseSelf([]byte("3:cpu,cpuacct:/a\n2:memory:/ctr/b\n1:pids:/c\n"))
	l, err := Detect(ms, self, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{CPU: "/cg/cpu,cpuacct/a", CPUAcct: "/cg/cpu,cpuacct/a", Memory: "/cg/memory/b", Pids: "/cg/pids/c"}
	if !reflect.DeepEqual(l.Dirs, want) {
		t.Fatalf("dirs %v, want %v", l.Dirs, want)
	}
	self["memory"] = "/elsewhere"
	if _, err := Detect(ms, self, nil); !errors.Is(err, ErrNoControllers) {
		t.Fatalf("memory outside the mounted subtree: %v", err)
	}
}

func TestParseMountinfoEscapes(t *testing.T) {
	ms, err := ParseMountinfo([]byte(`5 1 0:5 / /mnt/a\040b rw shared:1 master:2 - cgroup x rw,pids` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Point != "/mnt/a b" || ms[0].FSType != "cgroup" || !reflect.DeepEqual(ms[0].Super, []string{"rw", "pids"}) {
		t.Fatalf("%+v", ms)
	}
	for _, bad := range []string{"1 2 3\n", "1 0 0:1 / /x rw no separator here\n", `1 0 0:1 / /x\04 rw - cgroup c rw` + "\n", `1 0 0:1 / /x\999 rw - cgroup c rw` + "\n"} {
		if _, err := ParseMountinfo([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseSelfErrors(t *testing.T) {
	for _, bad := range []string{"x", "1:memory", "1:memory:relative", "x:memory:/"} {
		if _, err := ParseSelf([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseKeyed(t *testing.T) {
	ev := "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n"
	if n, ok := parseKeyed([]byte(ev), "oom_kill"); !ok || n != 2 {
		t.Fatalf("oom_kill = %d, %v", n, ok)
	}
	v1 := "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"
	if n, ok := parseKeyed([]byte(v1), "oom_kill"); !ok || n != 5 {
		t.Fatalf("v1 oom_kill = %d, %v", n, ok)
	}
	if _, ok := parseKeyed([]byte("oom_kill x\n"), "oom_kill"); ok {
		t.Fatal("bad number taken")
	}
	if ps, err := parsePids([]byte("12\n7\n")); err != nil || !reflect.DeepEqual(ps, []int{12, 7}) {
		t.Fatalf("pids %v %v", ps, err)
	}
	if _, err := parsePids([]byte("12\n-1\n")); err == nil {
		t.Fatal("negative pid taken")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(v1Mountinfo), []byte(v1Self))
	f.Add([]byte(`5 1 0:5 / /mnt/a\040b rw - cgroup x rw,pids`), []byte("0::/\n"))
	f.Fuzz(func(t *testing.T, mi, self []byte) {
		ms, err1 := ParseMountinfo(mi)
		s, err2 := ParseSelf(self)
		if err1 == nil && err2 == nil {
			Detect(ms, s, func(string) []string { return []string{Memory, Pids} })
		}
		parseKeyed(mi, "oom_kill")
		parsePids(self)
	})
}
