package gnttab

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shi/internal/abi"
	"shi/internal/ring"
)

// pages is a Frames backed by slices.
type pages map[[2]uint32][]byte

func (p pages) Frame(dom DomID, gfn uint32) []byte { return p[[2]uint32{uint32(dom), gfn}] }

func (p pages) add(dom DomID, gfn uint32, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, abi.PAGE_SIZE)
	p[[2]uint32{uint32(dom), gfn}] = b
	return b
}

// setup makes domains 1 (granter), 2 and 3, each with a one-page grant
// table; dom1 has frames 10 and 11, dom2 frame 20.
func setup(t *testing.T) (*Table, pages, map[DomID][]byte) {
	t.Helper()
	fr := pages{}
	fr.add(1, 10, 0xaa)
	fr.add(1, 11, 0xbb)
	fr.add(2, 20, 0x22)
	tab := New(fr)
	tables := map[DomID][]byte{}
	for _, d := range []DomID{1, 2, 3} {
		tables[d] = ring.AlignedBytes(abi.PAGE_SIZE)
		if err := tab.AddDomain(d, tables[d], Config{MaxMaps: 4}); err != nil {
			t.Fatal(err)
		}
	}
	return tab, fr, tables
}

func flags(table []byte, ref Ref) uint16 { return ReadEntry(table, ref).Flags }

func TestMapChecks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		entry    abi.GrantEntryV1
		mapper   DomID
		granter  DomID
		ref      Ref
		readonly bool
		want     Status
	}{
		{"rw", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 2, Frame: 10}, 2, 1, 8, false, Okay},
		{"ro of rw grant", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 2, Frame: 10}, 2, 1, 8, true, Okay},
		{"ro of ro grant", abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_readonly, Domid: 2, Frame: 10}, 2, 1, 8, true, Okay},
		{"rw of ro grant", abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_readonly, Domid: 2, Frame: 10}, 2, 1, 8, false, GeneralError},
		{"granted to someone else", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 3, Frame: 10}, 2, 1, 8, false, GeneralError},
		{"invalid entry", abi.GrantEntryV1{Flags: abi.GTF_invalid, Domid: 2, Frame: 10}, 2, 1, 8, true, GeneralError},
		{"transitive", abi.GrantEntryV1{Flags: abi.GTF_transitive, Domid: 2, Frame: 10}, 2, 1, 8, true, GeneralError},
		{"sub-page is copy only", abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_sub_page, Domid: 2, Frame: 10}, 2, 1, 8, true, GeneralError},
		{"ref past the table", abi.GrantEntryV1{}, 2, 1, 512, true, BadGntref},
		{"unknown granter", abi.GrantEntryV1{}, 2, 9, 8, true, BadDomain},
		{"unknown mapper", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 9, Frame: 10}, 9, 1, 8, true, BadDomain},
		{"frame not registered", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 2, Frame: 99}, 2, 1, 8, true, BadPage},
		{"frame of another domain", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 2, Frame: 20}, 2, 1, 8, true, BadPage},
		{"self map", abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 1, Frame: 11}, 1, abi.DOMID_SELF, 8, false, Okay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, _, tables := setup(t)
			tc.entry.Encode(tables[1][8*abi.GrantEntryV1Size:])
			m, st := tab.Map(tc.mapper, tc.granter, tc.ref, tc.readonly)
			if st != tc.want {
				t.Fatalf("Map = %v, want %v", st, tc.want)
			}
			f := flags(tables[1], 8)
			if st != Okay {
				if f != tc.entry.Flags {
					t.Errorf("failed map changed flags %#x -> %#x", tc.entry.Flags, f)
				}
				return
			}
			if m.Frame != tc.entry.Frame || m.Readonly != tc.readonly {
				t.Errorf("mapping %+v", m)
			}
			wantFlags := tc.entry.Flags | abi.GTF_reading | abi.GTF_shi_mapped
			if !tc.readonly {
				wantFlags |= abi.GTF_writing
			}
			if f != wantFlags {
				t.Errorf("flags %#x, want %#x", f, wantFlags)
			}
		})
	}
}

func TestMapLifecycle(t *testing.T) {
	tab, _, tables := setup(t)
	gt := tables[1]
	if err := GrantAccess(gt, 8, 2, 10, false); err != nil {
		t.Fatal(err)
	}
	if err := GrantAccess(gt, 8, 3, 11, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("re-grant of a live entry: %v", err)
	}
	ro, st := tab.Map(2, 1, 8, true)
	// GTF_shi_mapped stays until the granter ends access: the page went
	// out.
	const mapped = abi.GTF_permit_access | abi.GTF_shi_mapped
	if st != Okay || flags(gt, 8) != mapped|abi.GTF_reading {
		t.Fatalf("ro map: %v flags %#x", st, flags(gt, 8))
	}
	rw, st := tab.Map(2, 1, 8, false)
	if st != Okay || flags(gt, 8) != mapped|abi.GTF_reading|abi.GTF_writing {
		t.Fatalf("rw map: %v flags %#x", st, flags(gt, 8))
	}
	if ro.Handle == rw.Handle {
		t.Fatal("two mappings share a handle")
	}
	// A mapped grant cannot be revoked.
	if err := EndAccess(gt, 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("EndAccess while mapped: %v", err)
	}
	// While pinned, the active entry's frame and grantee rule: the granter
	// rewriting the entry changes neither.
	ReadEntry(gt, 8) // (flags stay as the agent set them)
	gt[4] = 11
	if m, st := tab.Map(2, 1, 8, true); st != Okay || m.Frame != 10 {
		t.Fatalf("map while pinned: %v frame %d", st, m.Frame)
	} else {
		tab.Unmap(2, m.Handle)
	}
	gt[4] = 10
	if _, st := tab.Map(3, 1, 8, true); st != GeneralError {
		t.Fatalf("map by another domain while pinned: %v", st)
	}
	if _, st := tab.Unmap(2, rw.Handle); st != Okay || flags(gt, 8) != mapped|abi.GTF_reading {
		t.Fatalf("unmap rw: %v flags %#x", st, flags(gt, 8))
	}
	if _, st := tab.Unmap(2, rw.Handle); st != BadHandle {
		t.Fatalf("double unmap: %v", st)
	}
	if err := EndAccess(gt, 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("EndAccess while mapped ro: %v", err)
	}
	if _, st := tab.Unmap(2, ro.Handle); st != Okay || flags(gt, 8) != mapped {
		t.Fatalf("unmap ro: %v flags %#x", st, flags(gt, 8))
	}
	if err := EndAccess(gt, 8); err != nil {
		t.Fatalf("EndAccess after unmap: %v", err)
	}
	if _, st := tab.Map(2, 1, 8, true); st != GeneralError {
		t.Fatalf("map after end of access: %v", st)
	}
	if len(tab.Mappings(2)) != 0 || len(tab.doms[1].active) != 0 {
		t.Fatal("state left behind")
	}
	if err := EndAccess(gt, 512); !errors.Is(err, ErrRef) {
		t.Fatalf("EndAccess out of range: %v", err)
	}
}

func TestMapLimitAndHandles(t *testing.T) {
	tab, _, tables := setup(t)
	GrantAccess(tables[1], 9, 2, 10, false)
	var hs []Handle
	for range 4 {
		m, st := tab.Map(2, 1, 9, true)
		if st != Okay {
			t.Fatal(st)
		}
		hs = append(hs, m.Handle)
	}
	if diff := cmp.Diff([]Handle{0, 1, 2, 3}, hs); diff != "" {
		t.Fatalf("handles (-want +got):\n%s", diff)
	}
	if _, st := tab.Map(2, 1, 9, true); st != NoSpace {
		t.Fatalf("fifth map: %v", st)
	}
	tab.Unmap(2, 1)
	if m, st := tab.Map(2, 1, 9, true); st != Okay || m.Handle != 1 {
		t.Fatalf("handle reuse: %v %d", st, m.Handle)
	}
}

func TestRemoveDomain(t *testing.T) {
	tab, _, tables := setup(t)
	GrantAccess(tables[1], 8, 2, 10, false)
	GrantAccess(tables[2], 8, 1, 20, true)
	m1, _ := tab.Map(2, 1, 8, false) // dom2 maps dom1's grant
	m2, _ := tab.Map(1, 2, 8, true)  // dom1 maps dom2's grant
	got := tab.RemoveDomain(1)
	revoked := m1
	revoked.Revoked = true
	want := Removed{Unmapped: []Mapping{m2}, Revoked: []Mapping{revoked}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Removed (-want +got):\n%s", diff)
	}
	if flags(tables[2], 8) != abi.GTF_permit_access|abi.GTF_readonly|abi.GTF_shi_mapped {
		t.Errorf("dom2's grant still pinned: %#x", flags(tables[2], 8))
	}
	// As in Xen, the mapper keeps its handle until it unmaps it.
	if len(tab.Mappings(2)) != 0 {
		t.Errorf("a revoked map is listed: %+v", tab.Mappings(2))
	}
	if _, st := tab.Unmap(2, m1.Handle); st != Okay {
		t.Errorf("unmap of a revoked mapping: %v", st)
	}
	if _, st := tab.Unmap(2, m1.Handle); st != BadHandle {
		t.Errorf("second unmap of a revoked mapping: %v", st)
	}
	if _, st := tab.Map(2, 1, 8, true); st != BadDomain {
		t.Errorf("map of a dead domain: %v", st)
	}
	if r := tab.RemoveDomain(1); len(r.Unmapped)+len(r.Revoked) != 0 {
		t.Error("second removal did something")
	}
}

func TestCopy(t *testing.T) {
	type tcase struct {
		name   string
		caller DomID
		op     CopyOp
		want   Status
	}
	gref := func(dom DomID, ref Ref, off uint16) CopyPtr { return CopyPtr{Dom: dom, Ref: ref, Offset: off} }
	self := func(frame uint32, off uint16) CopyPtr { return CopyPtr{Dom: abi.DOMID_SELF, Frame: frame, Offset: off} }
	const both = abi.GNTCOPY_source_gref | abi.GNTCOPY_dest_gref
	for _, tc := range []tcase{
		{"grant to own frame", 2, CopyOp{gref(1, 8, 0), self(20, 100), 50, abi.GNTCOPY_source_gref}, Okay},
		{"own frame to grant", 2, CopyOp{self(20, 0), gref(1, 8, 4046), 50, abi.GNTCOPY_dest_gref}, Okay},
		{"grant to grant", 2, CopyOp{gref(1, 9, 0), gref(1, 8, 0), 4096, both}, Okay},
		{"self grant ref", 1, CopyOp{gref(abi.DOMID_SELF, 10, 0), self(11, 0), 8, abi.GNTCOPY_source_gref}, Okay},
		{"crosses the page on the grant side", 2, CopyOp{gref(1, 8, 4000), self(20, 0), 97, abi.GNTCOPY_source_gref}, BadCopyArg},
		{"crosses the page on the frame side", 2, CopyOp{gref(1, 8, 0), self(20, 4095), 2, abi.GNTCOPY_source_gref}, BadCopyArg},
		{"frame of another domain", 2, CopyOp{CopyPtr{Dom: 1, Frame: 10}, self(20, 0), 8, 0}, PermissionDenied},
		{"frame not registered", 2, CopyOp{gref(1, 8, 0), self(21, 0), 8, abi.GNTCOPY_source_gref}, BadPage},
		{"write through a readonly grant", 2, CopyOp{self(20, 0), gref(1, 9, 0), 8, abi.GNTCOPY_dest_gref}, GeneralError},
		{"grant for someone else", 3, CopyOp{gref(1, 8, 0), gref(1, 9, 0), 8, both}, GeneralError},
		{"bad ref", 2, CopyOp{gref(1, 600, 0), self(20, 0), 8, abi.GNTCOPY_source_gref}, BadGntref},
		{"unknown domain", 2, CopyOp{gref(7, 8, 0), self(20, 0), 8, abi.GNTCOPY_source_gref}, BadDomain},
		{"unknown caller", 7, CopyOp{gref(1, 8, 0), self(20, 0), 8, abi.GNTCOPY_source_gref}, BadDomain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, fr, tables := setup(t)
			GrantAccess(tables[1], 8, 2, 10, false)
			GrantAccess(tables[1], 9, 2, 11, true)
			GrantAccess(tables[1], 10, 1, 10, true)
			before := map[Ref]uint16{8: flags(tables[1], 8), 9: flags(tables[1], 9)}
			src := bytes.Clone(fr.Frame(2, 20))
			if st := tab.Copy(tc.caller, tc.op); st != tc.want {
				t.Fatalf("Copy = %v, want %v", st, tc.want)
			}
			for ref, f := range before {
				if got := flags(tables[1], ref); got != f {
					t.Errorf("ref %d flags %#x after copy, want %#x", ref, got, f)
				}
			}
			switch tc.name {
			case "grant to own frame":
				if !bytes.Equal(fr.Frame(2, 20)[100:150], bytes.Repeat([]byte{0xaa}, 50)) || fr.Frame(2, 20)[150] != 0x22 {
					t.Error("bytes not copied")
				}
			case "own frame to grant":
				if !bytes.Equal(fr.Frame(1, 10)[4046:], src[:50]) {
					t.Error("bytes not copied")
				}
			case "grant to grant":
				if !bytes.Equal(fr.Frame(1, 10), bytes.Repeat([]byte{0xbb}, 4096)) {
					t.Error("page not copied")
				}
			case "unknown domain", "bad ref", "write through a readonly grant":
				if !bytes.Equal(fr.Frame(2, 20), src) {
					t.Error("failed copy changed bytes")
				}
			}
		})
	}
}

// TestCopyWhileMapped checks that a copy holds its pins only for the
// copy, and that a grant mapped by its grantee can also be copied through.
func TestCopyWhileMapped(t *testing.T) {
	tab, _, tables := setup(t)
	GrantAccess(tables[1], 8, 2, 10, false)
	op := CopyOp{Source: CopyPtr{Dom: abi.DOMID_SELF, Frame: 20}, Dest: CopyPtr{Dom: 1, Ref: 8}, Len: 4, Flags: abi.GNTCOPY_dest_gref}
	if st := tab.Copy(2, op); st != Okay {
		t.Fatal(st)
	}
	// A copy hands out no page: nothing for the granter to replace.
	if f := flags(tables[1], 8); f != abi.GTF_permit_access {
		t.Fatalf("flags after a copy alone %#x", f)
	}
	m, _ := tab.Map(2, 1, 8, true)
	if st := tab.Copy(2, op); st != Okay {
		t.Fatal(st)
	}
	if f := flags(tables[1], 8); f != abi.GTF_permit_access|abi.GTF_shi_mapped|abi.GTF_reading {
		t.Fatalf("flags after copy %#x: the write pin leaked or the read pin was dropped", f)
	}
	tab.Unmap(2, m.Handle)
	if f := flags(tables[1], 8); f != abi.GTF_permit_access|abi.GTF_shi_mapped {
		t.Fatalf("flags %#x", f)
	}
}

// TestUnstableEntry: a guest that keeps changing its entry cannot keep the
// agent looping; each attempt ends after a bounded number of CAS retries.
func TestUnstableEntry(t *testing.T) {
	_, _, tables := setup(t)
	gt := tables[1]
	GrantAccess(gt, 8, 2, 10, false)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the guest flips GTF_PWT as fast as it can
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				ring.Or32(gt, 8*abi.GrantEntryV1Size, abi.GTF_PWT)
				ring.And32(gt, 8*abi.GrantEntryV1Size, ^uint32(abi.GTF_PWT))
			}
		}
	}()
	for range 2000 {
		switch st := setStatus(gt, 8, 2, false, true, false); st {
		case Okay:
			clearFlags(gt, 8, abi.GTF_reading|abi.GTF_writing)
		case GeneralError:
		default:
			t.Fatalf("setStatus = %v", st)
		}
	}
	close(stop)
	<-done
}

func TestCheck(t *testing.T) {
	gt := ring.AlignedBytes(64)
	GrantAccess(gt, 1, 2, 10, true)
	for _, tc := range []struct {
		ref      Ref
		dom      DomID
		readonly bool
		frame    uint32
		want     Status
	}{
		{1, 2, true, 10, Okay},
		{1, 2, false, 0, GeneralError},
		{1, 3, true, 0, GeneralError},
		{2, 2, true, 0, GeneralError},
		{8, 2, true, 0, BadGntref},
	} {
		frame, st := Check(gt, tc.ref, tc.dom, tc.readonly)
		if st != tc.want || frame != tc.frame {
			t.Errorf("Check(%d, dom%d, ro=%v) = %d, %v; want %d, %v", tc.ref, tc.dom, tc.readonly, frame, st, tc.frame, tc.want)
		}
	}
	if flags(gt, 1) != abi.GTF_permit_access|abi.GTF_readonly {
		t.Error("Check changed the entry")
	}
}

func TestAddDomainRejects(t *testing.T) {
	tab := New(pages{})
	buf := ring.AlignedBytes(4096 + 1)
	for name, tc := range map[string]struct {
		dom   DomID
		table []byte
	}{
		"misaligned":     {1, buf[1:4097]},
		"partial entry":  {1, buf[:12]},
		"reserved domid": {abi.DOMID_SELF, buf[:8]},
	} {
		if err := tab.AddDomain(tc.dom, tc.table, Config{}); !errors.Is(err, ErrDomain) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := tab.AddDomain(1, buf[:8], Config{}); err != nil {
		t.Fatal(err)
	}
	if err := tab.AddDomain(1, buf[:8], Config{}); !errors.Is(err, ErrDomain) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestFramePinned(t *testing.T) {
	fr := pages{}
	fr.add(1, 10, 1)
	tab := New(fr)
	gt := ring.AlignedBytes(abi.PAGE_SIZE)
	tab.AddDomain(1, gt, Config{})
	tab.AddDomain(2, ring.AlignedBytes(8), Config{})
	GrantAccess(gt, 8, 2, 10, false)
	if tab.FramePinned(1, 10) {
		t.Fatal("pinned before map")
	}
	m, st := tab.Map(2, 1, 8, true)
	if st != Okay {
		t.Fatal(st)
	}
	if !tab.FramePinned(1, 10) || tab.FramePinned(1, 11) || tab.FramePinned(2, 10) {
		t.Fatal("FramePinned wrong while mapped")
	}
	tab.Unmap(2, m.Handle)
	if tab.FramePinned(1, 10) {
		t.Fatal("pinned after unmap")
	}
}
