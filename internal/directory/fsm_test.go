package directory

import (
	"bytes"
	"strings"
	"testing"

	"shi/internal/xenstore"
)

func create(t *testing.T, f *FSM, idx *uint64, name, host string) Response {
	t.Helper()
	*idx++
	return f.Apply(*idx, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: name, Host: host, MemoryMiB: 64, Created: 5}}))
}

func TestDomainLifecycle(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	var idx uint64
	a := create(t, f, &idx, "a", "h1")
	b := create(t, f, &idx, "b", "h2")
	if a.Domain == nil || b.Domain == nil || a.Domain.ID != 1 || b.Domain.ID != 2 {
		t.Fatalf("create: %+v %+v", a, b)
	}
	if len(a.Xs.Events) != 1 || a.Xs.Events[0].Path != xenstore.IntroduceDomain {
		t.Fatalf("create fired %+v", a.Xs.Events)
	}
	if r := create(t, f, &idx, "a", "h1"); r.Err != ErrNameInUse.Error() {
		t.Fatalf("duplicate name: %+v", r)
	}
	if r := create(t, f, &idx, "bad/name", "h1"); r.Err == "" {
		t.Fatal("bad name accepted")
	}
	// The home is removed with the domain, and its domid is not reused next.
	idx++
	f.Apply(idx, XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: "/local/domain/1/name", Value: []byte("a")}))
	idx++
	r := f.Apply(idx, DomainEntry(DomainCmd{Op: DomRemove, Domain: Domain{ID: 1}}))
	if r.Err != "" || f.State().Get("/local/domain/1") != nil {
		t.Fatalf("remove: %+v", r)
	}
	if ev := r.Xs.Events; len(ev) != 3 || ev[2].Path != xenstore.ReleaseDomain {
		t.Fatalf("remove fired %+v", ev)
	}
	if c := create(t, f, &idx, "c", "h1"); c.Domain.ID != 3 {
		t.Fatalf("domid reused at once: %+v", c.Domain)
	}
	// A host going down marks its domains dead, once.
	idx++
	r = f.Apply(idx, DomainEntry(DomainCmd{Op: DomHostDown, Domain: Domain{Host: "h2", Updated: 9}}))
	if d, _ := f.Domain(2); d.State != StateDead || len(r.Xs.Events) != 1 {
		t.Fatalf("host down: %+v %+v", d, r)
	}
	idx++
	if r := f.Apply(idx, DomainEntry(DomainCmd{Op: DomHostDown, Domain: Domain{Host: "h2"}})); len(r.Xs.Events) != 0 {
		t.Fatalf("second host down fired %+v", r.Xs.Events)
	}
	if f.State().Introduced(2) {
		t.Fatal("dead domain still introduced")
	}
	if f.Applied() != idx {
		t.Fatalf("applied %d, want %d", f.Applied(), idx)
	}
}

// TestDomainCrash: a crashed domain is released at once (its home goes,
// @releaseDomain fires) and stays listed; its name is free for a create
// that asks for it (Reuse), which replaces the entry; removing it later
// does not release it again. Entries logged before crashed existed apply
// as they did.
func TestDomainCrash(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	var idx uint64
	apply := func(c DomainCmd) Response {
		idx++
		return f.Apply(idx, DomainEntry(c))
	}
	home := func(id uint32) {
		idx++
		f.Apply(idx, XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: homeOf(id) + "/name", Value: []byte("x")}))
	}
	released := func(r Response) bool {
		for _, e := range r.Xs.Events {
			if e.Path == xenstore.ReleaseDomain {
				return true
			}
		}
		return false
	}
	for _, n := range []string{"a", "b", "c", "d"} {
		r := apply(DomainCmd{Op: DomCreate, Domain: Domain{Name: n, Host: "h1", Created: 1, UUID: "uuid-" + n}})
		home(r.Domain.ID)
	}
	// A domain of this host crashed: set-state.
	r := apply(DomainCmd{Op: DomSetState, Domain: Domain{ID: 1, State: StateCrashed}})
	if d, ok := f.Domain(1); !ok || d.State != StateCrashed || d.Running() || !released(r) || f.State().Get("/local/domain/1") != nil {
		t.Fatalf("crash: %+v %v %+v home %v", d, ok, r.Xs.Events, f.State().Get("/local/domain/1"))
	}
	if r := apply(DomainCmd{Op: DomSetState, Domain: Domain{ID: 1, State: StateCrashed}}); released(r) {
		t.Fatal("crashed twice, released twice")
	}
	// Its name: taken only by a create that asks.
	if r := apply(DomainCmd{Op: DomCreate, Domain: Domain{Name: "a", Host: "h1"}}); r.Err != ErrNameInUse.Error() {
		t.Fatalf("create over a crashed name without Reuse: %+v", r)
	}
	r = apply(DomainCmd{Op: DomCreate, Domain: Domain{Name: "a", Host: "h1", UUID: "uuid-a"}, Reuse: true})
	if r.Err != "" || r.Domain.ID != 5 || released(r) {
		t.Fatalf("create over a crashed name: %+v", r)
	}
	if _, ok := f.Domain(1); ok || len(f.Domains()) != 4 {
		t.Fatalf("the crashed entry stays: %+v", f.Domains())
	}
	if r := apply(DomainCmd{Op: DomCreate, Domain: Domain{Name: "b", Host: "h1"}, Reuse: true}); r.Err != ErrNameInUse.Error() {
		t.Fatalf("create over a running name: %+v", r)
	}
	// Its host went down: host-down with the state.
	r = apply(DomainCmd{Op: DomHostDown, Domain: Domain{Host: "h1", State: StateCrashed}})
	for _, id := range []uint32{2, 3, 4, 5} {
		if d, _ := f.Domain(id); d.State != StateCrashed || f.State().Introduced(id) {
			t.Fatalf("host down: dom%d %+v", id, d)
		}
	}
	if f.State().Get("/local/domain/2") != nil || len(r.Xs.Events) == 0 {
		t.Fatalf("host down: home of dom2 left, events %+v", r.Xs.Events)
	}
	if r := apply(DomainCmd{Op: DomRemove, Domain: Domain{ID: 2}}); r.Err != "" || released(r) || f.State().Get("/vm/uuid-b") != nil {
		t.Fatalf("remove a crashed domain: %+v", r)
	}
	// Before crashed: a host-down without a state marks dead, and a
	// create does not take a dead domain's name.
	g := NewFSM(xenstore.DefaultQuota())
	g.Apply(1, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "old", Host: "h9"}}))
	g.Apply(2, DomainEntry(DomainCmd{Op: DomHostDown, Domain: Domain{Host: "h9"}}))
	if d, _ := g.Domain(1); d.State != StateDead {
		t.Fatalf("legacy host down: %+v", d)
	}
	if r := g.Apply(3, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "old", Host: "h9"}})); r.Err != ErrNameInUse.Error() {
		t.Fatalf("legacy create over a dead name: %+v", r)
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	var idx uint64
	create(t, f, &idx, "a", "h1")
	create(t, f, &idx, "b", "h1")
	idx++
	f.Apply(idx, XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: "/x", Value: []byte("1")}))
	var buf bytes.Buffer
	if err := f.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if g.Applied() != f.Applied() || len(g.Domains()) != 2 || g.State().Dump("/") != f.State().Dump("/") {
		t.Fatal("restored FSM differs")
	}
	// Allocation continues where it was.
	if c := create(t, g, &idx, "c", "h1"); c.Domain.ID != 3 {
		t.Fatalf("allocation after restore: %+v", c.Domain)
	}
}

func TestUnknownEntries(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	if r := f.Apply(1, []byte{0x80 | 0x7f, 1, 2}); r.Err != "" {
		t.Fatalf("ignorable entry: %+v", r)
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "unknown log entry") {
			t.Fatalf("unknown entry did not panic: %v", p)
		}
	}()
	f.Apply(2, []byte{0x7f})
}

// FuzzApply feeds arbitrary entries of the known types: no panic, and the
// tree's invariants hold.
func FuzzApply(f *testing.F) {
	f.Add(DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "x", Host: "h"}}))
	f.Add(XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: "/a", Value: []byte("v")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || (b[0] != entryXenstore && b[0] != entryDomain && b[0] != entryNoop) {
			return
		}
		m := NewFSM(xenstore.DefaultQuota())
		m.Apply(1, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "x", Host: "h"}}))
		m.Apply(2, b)
		m.Apply(3, b)
		if err := m.State().Check(); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		m.Snapshot().Persist(&buf)
		if _, err := ReadSnapshot(&buf); err != nil {
			t.Fatalf("own snapshot rejected: %v", err)
		}
	})
}

func FuzzReadSnapshot(f *testing.F) {
	var buf bytes.Buffer
	m := NewFSM(xenstore.DefaultQuota())
	m.Apply(1, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "x", Host: "h"}}))
	m.Snapshot().Persist(&buf)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ReadSnapshot(bytes.NewReader(b))
		if err == nil {
			if err := g.State().Check(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A host-down entry crashes the domains its verdict named, not one the
// host started after it came back, before the entry applied (a verdict
// on a starved agent that rejoined at once).
func TestHostDownNamesItsDomains(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	var idx uint64
	old := create(t, f, &idx, "old", "h1").Domain
	fresh := create(t, f, &idx, "fresh", "h1").Domain
	idx++
	f.Apply(idx, DomainEntry(DomainCmd{Op: DomHostDown, IDs: []uint32{old.ID}, Domain: Domain{Host: "h1", State: StateCrashed, Updated: 9}}))
	if d, _ := f.Domain(old.ID); d.State != StateCrashed {
		t.Fatalf("the verdict's domain: %+v", d)
	}
	if d, _ := f.Domain(fresh.ID); !d.Running() || !f.State().Introduced(fresh.ID) {
		t.Fatalf("a domain the verdict did not name: %+v", d)
	}
	// Without IDs (entries logged before them): every domain of the host.
	idx++
	f.Apply(idx, DomainEntry(DomainCmd{Op: DomHostDown, Domain: Domain{Host: "h1", State: StateCrashed, Updated: 10}}))
	if d, _ := f.Domain(fresh.ID); d.State != StateCrashed {
		t.Fatalf("an entry without IDs: %+v", d)
	}
}
