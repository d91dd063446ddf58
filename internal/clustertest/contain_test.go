package clustertest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/domain"
)

// domainProcs counts the live processes under domain id's uid (test
// hosts share the machine's process table).
func domainProcs(id uint32) int {
	uid, _ := domain.DomainUID(id)
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		st, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		mine, zombie := false, false
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == strconv.FormatUint(uint64(uid), 10) {
				mine = true
			}
			if strings.HasPrefix(l, "State:") && strings.Contains(l, "Z") {
				zombie = true
			}
		}
		if mine && !zombie {
			n++
		}
	}
	return n
}

// TestContainedDomains: on a test host, a fork bomb stops at its pids and
// a memory hog is killed and shows as out of memory, while a cross-host
// pair on the same host finishes its rounds; shi list (from the other
// host) shows the bomb's use; its destroy returns once it is all gone.
func TestContainedDomains(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 2, BootstrapExpect: 1})
	h0, h1 := c.Host(0), c.Host(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shell := func(name, script string, extra ...string) string {
		return fmt.Sprintf("name = %q\ncmd = \"/bin/bash\"\nargs = [\"-c\", %q]\nmemory = 4\n%s\n", name, script, strings.Join(extra, "\n"))
	}
	// The bomb forks in a subshell: a non-interactive bash gives up when
	// a fork keeps failing, and the domain would end with it (under load
	// before the test looks). The first process waits in a builtin, which
	// needs no fork, on its terminal.
	bomb := createOn(t, ctx, h0, shell("bomb", "(while :; do sleep 600 & done); read -r _", "pids = 40"))
	hog := createOn(t, ctx, h0, shell("hog", fmt.Sprintf("head -c %d /dev/zero | tail -n 1 >/dev/null", 4*domain.MemoryFloorMiB<<20)))
	a, b := crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=2000")
	if o := waitEnd(t, h0, hog, time.Minute); o.Exit != "out of memory" {
		t.Errorf("hog ended %q, want out of memory\n%s", o.Exit, strings.Join(o.Lines, "\n"))
	}
	expectExit0(t, []*Host{h0, h1}, a, b)
	if n := domainProcs(bomb.ID); n < 30 || n > 40 {
		t.Errorf("the bomb has %d processes, pids = 40", n)
	}
	ds, err := patientAPI(h1).ListDomainsUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seen *api.Domain
	for i := range ds {
		if ds[i].ID == bomb.ID {
			seen = &ds[i]
		}
	}
	if seen == nil || seen.Usage == nil || seen.Usage.MemoryBytes == 0 {
		t.Fatalf("h1 lists the bomb without its use: %+v", seen)
	}
	if err := patientAPI(h1).DestroyDomain(ctx, "bomb"); err != nil {
		t.Fatal(err)
	}
	if n := domainProcs(bomb.ID); n != 0 {
		t.Fatalf("destroy returned with %d processes of the bomb alive", n)
	}
}
