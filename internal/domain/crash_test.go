package domain_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/domain/domaintest"
)

// introduce commits a domain-table entry for a domain of host as an
// earlier agent would have, with its home, and returns it.
func introduce(t *testing.T, e *domaintest.Env, host, name string, extra ...string) directory.Domain {
	t.Helper()
	cfg, err := domain.ParseConfig(domaintest.Config(name, "sleeper", nil, extra...))
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := json.Marshal(cfg)
	_, resp, err := e.Committer.Commit(context.Background(), directory.DomainEntry(directory.DomainCmd{Op: directory.DomCreate,
		Domain: directory.Domain{Name: name, Host: host, State: directory.StateRunning, MemoryMiB: 4, UUID: "uuid-" + name, Config: conf}}))
	if err != nil || resp.Domain == nil {
		t.Fatalf("introduce %s: %v %s", name, err, resp.Err)
	}
	e.WriteAsDom0(t, fmt.Sprintf("/local/domain/%d/name", resp.Domain.ID), name)
	return *resp.Domain
}

func reconciling(t *testing.T, e *domaintest.Env) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.Manager.Reconcile(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(exitWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, exitWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReconcileAfterRestart: domains the directory says run on this host
// but that no process runs (they died with an earlier agent) are crashed
// once the manager reconciles: each is released (@releaseDomain fires,
// its home goes) and follows its on_crash: destroy removes it (its name
// is free), restart starts it again under a new domid and the same uuid.
func TestReconcileAfterRestart(t *testing.T) {
	e := domaintest.Start(t)
	gone := introduce(t, e, e.Host, "gone")
	phoenix := introduce(t, e, e.Host, "phoenix", `on_crash = "restart"`)
	c := dom0(t, e)
	w, err := c.Watch("@releaseDomain", "rel")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events() // fires once when set

	reconciling(t, e)
	waitFor(t, "gone removed, phoenix running again", func() bool {
		_, stays := e.Replica.Domain(gone.ID)
		d, ok := e.Manager.Lookup("phoenix")
		return !stays && ok && d.ID != phoenix.ID && d.Running()
	})
	select {
	case <-w.Events():
	case <-time.After(exitWait):
		t.Fatal("no @releaseDomain")
	}
	d, _ := e.Manager.Lookup("phoenix")
	if d.UUID != phoenix.UUID || d.Host != e.Host {
		t.Errorf("restarted as %+v", d)
	}
	if len(e.Manager.List()) != 1 {
		t.Errorf("left in the table: %+v", e.Manager.List())
	}
	for _, id := range []uint32{gone.ID, phoenix.ID} {
		if _, err := c.Read(fmt.Sprintf("/local/domain/%d", id)); !errors.Is(err, errNoent) {
			t.Errorf("home of dom%d: %v", id, err)
		}
	}
	e.Create(t, "gone", "sleeper") // its name is free
}

// TestHostDown: the domains of a host declared dead are crashed in the
// table (released: their homes go); those with on_crash = "destroy" are
// removed, those to restart stay listed, crashed, until their host
// returns, and their names are free meanwhile.
func TestHostDown(t *testing.T) {
	e := domaintest.Start(t)
	a := introduce(t, e, "elsewhere", "a")
	b := introduce(t, e, "elsewhere", "b", `on_crash = "restart"`)
	if err := e.Manager.HostDown(context.Background(), "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Replica.Domain(a.ID); ok {
		t.Error("a (on_crash = destroy) still listed")
	}
	d, ok := e.Replica.Domain(b.ID)
	if !ok || d.State != directory.StateCrashed {
		t.Fatalf("b (on_crash = restart): %+v %v, want crashed", d, ok)
	}
	c := dom0(t, e)
	if _, err := c.Read(fmt.Sprintf("/local/domain/%d", b.ID)); !errors.Is(err, errNoent) {
		t.Errorf("home of b: %v", err)
	}
	if err := e.Manager.HostDown(context.Background(), "elsewhere"); err != nil {
		t.Fatalf("again: %v", err)
	}
	nb := e.Create(t, "b", "sleeper")
	if _, ok := e.Replica.Domain(b.ID); ok || nb.Host != e.Host {
		t.Errorf("a new b here (%+v) did not replace the crashed one", nb)
	}
}

// TestReconcileKillsEndedDomain: a domain the directory has ended while
// it ran here (its host was declared dead while only cut off) is killed,
// since its peers were told it is gone, and its on_crash followed.
func TestReconcileKillsEndedDomain(t *testing.T) {
	e := domaintest.Start(t)
	d := e.Create(t, "zombie", "sleeper")
	reconciling(t, e)
	if err := e.Manager.HostDown(context.Background(), e.Host); err != nil {
		t.Fatal(err)
	}
	if x := e.WaitExit(t, "zombie", 0, exitWait); x.Dom.ID != d.ID {
		t.Fatalf("exit %+v", x)
	}
	waitFor(t, "zombie gone from the table", func() bool { return len(e.Manager.List()) == 0 })
}
