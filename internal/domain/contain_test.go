package domain_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/domain/domaintest"
)

// contained starts an agent whose domains run in cgroups: it needs root,
// as the agent does to contain them.
func contained(t *testing.T) *domaintest.Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containing domains needs root")
	}
	return domaintest.Start(t)
}

// shell creates a domain running sh -c script.
func shell(t *testing.T, e *domaintest.Env, name, script string, extra ...string) directory.Domain {
	t.Helper()
	cfg := fmt.Sprintf("name = %q\ncmd = \"/bin/bash\"\nargs = [\"-c\", %q]\nmemory = 4\nconsole = \"direct\"\n%s\n", name, script, strings.Join(extra, "\n"))
	d, err := e.Manager.Create(context.Background(), domain.Spec{Config: cfg})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return d
}

// procsOf lists the live processes running under domain d's uid.
func procsOf(d directory.Domain) []int {
	uid, _ := domain.DomainUID(d.ID)
	ents, _ := os.ReadDir("/proc")
	var ps []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		var u, zombie bool
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == strconv.FormatUint(uint64(uid), 10) {
				u = true
			}
			if strings.HasPrefix(l, "State:") && strings.Contains(l, "Z") {
				zombie = true
			}
		}
		if u && !zombie {
			ps = append(ps, pid)
		}
	}
	return ps
}

// A fork bomb stays within pids while other domains and the agent go on;
// its destroy returns once every process of it is gone.
func TestForkBombContained(t *testing.T) {
	e := contained(t)
	bomb := shell(t, e, "bomb", "while :; do sleep 600 & done", "pids = 40")
	waitFor(t, "the bomb to reach its cap", func() bool { return len(procsOf(bomb)) >= 35 })
	if n := len(procsOf(bomb)); n > 40 {
		t.Fatalf("%d processes in a domain with pids = 40", n)
	}
	pair(t, e, "pong", "pong", "ping", "ping", "ROUNDS=200")
	expectOK(t, e, "ping", "pong")
	if u, ok := e.Manager.Usage(bomb.ID); !ok || u.MemoryBytes == 0 {
		t.Errorf("usage of the bomb: %+v, %v", u, ok)
	}
	if err := e.Manager.Destroy(context.Background(), "bomb"); err != nil {
		t.Fatal(err)
	}
	if ps := procsOf(bomb); len(ps) != 0 {
		t.Fatalf("destroy returned with %d processes of the domain alive", len(ps))
	}
	if !strings.Contains(e.Log.String(), "domains contained by cgroups") {
		t.Errorf("agent log does not say domains are contained:\n%s", e.Log)
	}
}

// Processes that left the domain's session and process group are still
// its processes: destroy returns only once they are gone too.
func TestDestroyKillsEscapees(t *testing.T) {
	e := contained(t)
	d := shell(t, e, "escapee", `setsid sleep 600 & setsid bash -c 'sleep 600 & sleep 600' & sleep 600`)
	waitFor(t, "its processes", func() bool { return len(procsOf(d)) >= 5 })
	if err := e.Manager.Destroy(context.Background(), "escapee"); err != nil {
		t.Fatal(err)
	}
	if ps := procsOf(d); len(ps) != 0 {
		t.Fatalf("destroy returned with processes of the domain alive: %v", ps)
	}
	if x := e.WaitExit(t, "escapee", 0, exitWait); !x.Status.Destroyed {
		t.Fatalf("status %v", x.Status)
	}
}

// A domain over its memory is killed by the kernel, shows as crashed and
// follows on_crash = "restart"; the agent and other domains go on.
func TestOutOfMemoryCrashRestarts(t *testing.T) {
	e := contained(t)
	dir, err := os.MkdirTemp("", "shi-oom-once-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "hogged")
	// tail keeps a whole line, and /dev/zero has none: it grows until the
	// cap (MemoryFloorMiB, memory being lower).
	script := fmt.Sprintf("if [ -e %[1]s ]; then exec sleep 600; fi; touch %[1]s; head -c %[2]d /dev/zero | tail -n 1 >/dev/null", marker, 4*domain.MemoryFloorMiB<<20)
	first := shell(t, e, "hog", script, `on_crash = "restart"`)
	pair(t, e, "pong", "pong", "ping", "ping", "ROUNDS=200")
	x := e.WaitExit(t, "hog", 0, exitWait)
	if !x.Status.OOM || !x.Status.Crashed() {
		t.Fatalf("hog: %v", x.Status)
	}
	expectOK(t, e, "ping", "pong")
	waitFor(t, "the hog's restart", func() bool {
		d, ok := e.Manager.Lookup("hog")
		return ok && d.ID != first.ID && d.Running()
	})
	again, _ := e.Manager.Lookup("hog")
	if err := e.Manager.Destroy(context.Background(), strconv.Itoa(int(again.ID))); err != nil {
		t.Fatal(err)
	}
	if x := e.WaitExit(t, "hog", 1, exitWait); !x.Status.Destroyed {
		t.Fatalf("second run: %v", x.Status)
	}
}

// pids, and the caps a config asks for.
func TestPidsKey(t *testing.T) {
	c, err := domain.ParseConfig("name = \"a\"\ncmd = \"x\"\npids = 64\n")
	if err != nil || c.Pids != 64 {
		t.Fatalf("pids = 64: %+v, %v", c, err)
	}
	for _, bad := range []string{"pids = 0", "pids = \"x\"", "pids = 99999999999"} {
		if _, err := domain.ParseConfig("name = \"a\"\ncmd = \"x\"\n" + bad + "\n"); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
