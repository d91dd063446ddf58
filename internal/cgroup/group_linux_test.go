package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openHost opens a host directory on this machine's cgroups; it needs
// root, as the agent does to contain domains.
func openHost(t *testing.T) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroup: making groups needs root")
	}
	h, err := Open("shi-test")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return h
}

func newGroup(t *testing.T, h *Host, name string, lim Limits) *Group {
	t.Helper()
	g, err := h.New(name, lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Kill(ctx); err != nil {
			t.Error(err)
		}
		if err := g.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return g
}

// A process is in its group from its first instruction, and the agent's
// threads are back where they were.
func TestStartInside(t *testing.T) {
	h := openHost(t)
	g := newGroup(t, h, "inside", Limits{MemoryBytes: 64 << 20, Pids: 16, VCPUs: 2})
	// The caps asked for are the kernel's.
	caps := map[string]string{}
	if h.Version() == 2 {
		caps = map[string]string{filepath.Join(g.dir, "memory.max"): "67108864", filepath.Join(g.dir, "pids.max"): "16", filepath.Join(g.dir, "cpu.max"): "200000 100000"}
	} else {
		caps[filepath.Join(g.dirs[Memory], "memory.limit_in_bytes")] = "67108864"
		caps[filepath.Join(g.dirs[Pids], "pids.max")] = "16"
		if d, ok := g.dirs[CPU]; ok {
			caps[filepath.Join(d, "cpu.cfs_quota_us")] = "200000"
		}
	}
	for f, want := range caps {
		if b, err := os.ReadFile(f); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q, %v; want %s", f, b, err, want)
		}
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/cat", "/proc/self/cgroup")
	cmd.Stdout = out
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out.Name())
	self, err := ParseSelf(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version() == 2 {
		if !strings.HasSuffix(self[""], "/inside") {
			t.Errorf("child's cgroup %q", self[""])
		}
	} else {
		for _, c := range []string{Memory, Pids, CPU} {
			if _, ok := h.l.Dirs[c]; ok && !strings.HasSuffix(self[c], h.name+"/inside") {
				t.Errorf("child's %s cgroup %q", c, self[c])
			}
		}
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/cgroup")
	for _, f := range tasks {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "/inside") {
			t.Errorf("%s still in the group:\n%s", f, b)
		}
	}
}

// pids.max holds a fork bomb, and Kill leaves nothing behind.
func TestForkBombContained(t *testing.T) {
	h := openHost(t)
	g := newGroup(t, h, "bomb", Limits{MemoryBytes: 64 << 20, Pids: 20})
	// bash retries a fork that fails, where dash gives up and exits.
	cmd := exec.Command("/bin/bash", "-c", "while :; do sleep 30 & done")
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for g.ForksRefused() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no fork refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ps, err := g.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) == 0 || len(ps) > 20 {
		t.Fatalf("%d processes in a group capped at 20", len(ps))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if ps, _ := g.Procs(); len(ps) != 0 {
		t.Fatalf("left after Kill: %v", ps)
	}
	for _, p := range ps {
		if _, err := os.Stat("/proc/" + itoa(p)); err == nil {
			if st, _ := os.ReadFile("/proc/" + itoa(p) + "/stat"); !strings.Contains(string(st), ") Z ") {
				t.Errorf("process %d still alive", p)
			}
		}
	}
}

// The memory cap holds a hog, and the OOM kill is counted.
func TestMemoryHogOOM(t *testing.T) {
	h := openHost(t)
	g := newGroup(t, h, "hog", Limits{MemoryBytes: 16 << 20, Pids: 16})
	// tail keeps a whole line; /dev/zero has none.
	cmd := exec.Command("/bin/sh", "-c", "head -c 200000000 /dev/zero | tail -n 1 >/dev/null")
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("hog not stopped")
	}
	if n := g.OOMKills(); n == 0 {
		t.Fatal("no OOM kill counted")
	}
	if u := g.Usage(); u.MemoryBytes > 16<<20 {
		t.Errorf("usage %d over the cap", u.MemoryBytes)
	}
}

// Usage counts memory and CPU time.
func TestUsage(t *testing.T) {
	h := openHost(t)
	g := newGroup(t, h, "use", Limits{MemoryBytes: 64 << 20, Pids: 16})
	cmd := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 5")
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u := g.Usage()
		if u.MemoryBytes > 0 && (u.CPUNanos > 1e6 || !h.hasCPUAcct()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %+v", u)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *Host) hasCPUAcct() bool {
	_, ok := h.l.Dirs[CPUAcct]
	return h.l.Version == 2 || ok
}

func itoa(n int) string { return strconv.Itoa(n) }

// An agent started by "ip netns exec", as on test hosts, sees a fresh
// /sys without the cgroup mounts; it still contains its domains.
func TestOpenInsideIPNetnsExec(t *testing.T) {
	if os.Getenv("SHI_CGROUP_CHILD") == "1" {
		return // run as the child below
	}
	if os.Geteuid() != 0 {
		t.Skip("cgroup: making groups needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8)")
	}
	ns := "shi-cgtest-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestOpenFromChild$", "-test.v")
	cmd.Env = append(os.Environ(), "SHI_CGROUP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "contained: ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestOpenFromChild is the child of TestOpenInsideIPNetnsExec: the cgroup
// mounts are hidden, yet a group holds a process.
func TestOpenFromChild(t *testing.T) {
	if os.Getenv("SHI_CGROUP_CHILD") != "1" {
		return // only as that child
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), " - cgroup ") {
		t.Fatal("cgroup mounts visible: not the mount namespace of ip netns exec")
	}
	h := openHost(t)
	g := newGroup(t, h, "netns", Limits{MemoryBytes: 64 << 20, Pids: 8})
	cmd := exec.Command("/bin/sleep", "30")
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	if ps, err := g.Procs(); err != nil || len(ps) != 1 || ps[0] != cmd.Process.Pid {
		t.Fatalf("procs %v, %v; want [%d]", ps, err, cmd.Process.Pid)
	}
	fmt.Println("contained: ok")
}

// Sweep empties and removes the groups of an agent that is gone.
func TestSweepDeadAgent(t *testing.T) {
	h := openHost(t)
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	// The directory a killed agent of that pid would have left, with a
	// process of one of its domains still running.
	name := "shi-sweeptest-" + strconv.Itoa(dead.Process.Pid) + "-1"
	left := &Host{l: h.l, name: name}
	var bases []string
	if h.l.Version == 2 {
		left.base = filepath.Join(h.l.Unified, name)
		bases = []string{left.base}
		if err := os.Mkdir(left.base, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		left.bases = map[string]string{}
		for c, d := range h.l.Dirs {
			left.bases[c] = filepath.Join(d, name)
		}
		bases = left.dirs(left.bases)
		for _, d := range bases {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	g, err := left.New("dom7", Limits{Pids: 8})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "600")
	if err := g.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	Sweep("shi-sweeptest")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the left domain's process still runs")
	}
	for _, d := range bases {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s still there", d)
		}
	}
}
