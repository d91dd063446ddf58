package gnttab

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shi/internal/abi"
)

// A domain of another host (99 on "b") maps dom1's grant: the entry is
// pinned as for a local map, end access is refused until the pin is
// dropped, and pins are dropped per generation, per mapper and per host.
func TestRemotePins(t *testing.T) {
	tab, _, tables := setup(t)
	abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 99, Frame: 10}.Encode(tables[1][8*abi.GrantEntryV1Size:])
	abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_readonly, Domid: 99, Frame: 11}.Encode(tables[1][9*abi.GrantEntryV1Size:])

	if _, st := tab.PinRemote(RemotePin{Host: "b", Mapper: 98, Granter: 1, Ref: 8}); st != GeneralError {
		t.Fatalf("pin by a domain the grant is not for: %v", st)
	}
	if _, st := tab.PinRemote(RemotePin{Host: "b", Mapper: 99, Granter: 1, Ref: 9}); st != GeneralError {
		t.Fatalf("writable pin of a read-only grant: %v", st)
	}
	p, st := tab.PinRemote(RemotePin{Host: "b", Mapper: 99, Granter: 1, Ref: 8, Gen: 1, NotifyOff: 21})
	if st != Okay || p.Frame != 10 {
		t.Fatalf("pin: %+v %v", p, st)
	}
	if f := flags(tables[1], 8); f&(abi.GTF_reading|abi.GTF_writing) != abi.GTF_reading|abi.GTF_writing || f&abi.GTF_shi_mapped != 0 {
		t.Fatalf("flags after a remote pin: %#x", f)
	}
	if err := EndAccess(tables[1], 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("end access while pinned remotely: %v", err)
	}
	if !tab.FramePinned(1, 10) {
		t.Fatal("frame 10 not pinned")
	}
	// A second map (generation 2) by the same mapper; read-only pin too.
	if _, st := tab.PinRemote(RemotePin{Host: "b", Mapper: 99, Granter: 1, Ref: 8, Gen: 2}); st != Okay {
		t.Fatal(st)
	}
	if _, st := tab.PinRemote(RemotePin{Host: "b", Mapper: 99, Granter: 1, Ref: 9, Gen: 1, Readonly: true}); st != Okay {
		t.Fatal(st)
	}
	// The fence of generation 1 drops only generation 1.
	got := tab.UnpinRemote("b", 99, 1, 8, 1)
	if len(got) != 1 || got[0].Gen != 1 || got[0].NotifyOff != 21 {
		t.Fatalf("unpin gen 1: %+v", got)
	}
	if err := EndAccess(tables[1], 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("end access with generation 2 pinned: %v", err)
	}
	if got := tab.UnpinRemote("c", 99, 1, 8, 5); len(got) != 0 {
		t.Fatalf("another host's unpin dropped %+v", got)
	}
	if got := tab.UnpinRemote("b", 99, 1, 8, 2); len(got) != 1 {
		t.Fatalf("unpin gen 2: %+v", got)
	}
	if err := EndAccess(tables[1], 8); err != nil {
		t.Fatalf("end access once unpinned: %v", err)
	}
	// Host b dies: its pins go, the read-only grant can end.
	if got := tab.DropHostPins("b"); len(got) != 1 || got[0].Ref != 9 {
		t.Fatalf("drop host: %+v", got)
	}
	if err := EndAccess(tables[1], 9); err != nil {
		t.Fatalf("end access after the host died: %v", err)
	}
	if tab.FramePinned(1, 10) || tab.FramePinned(1, 11) {
		t.Fatal("frames still pinned")
	}
}

// A granter that dies reports the remote pins on its grants, so its agent
// can tell the mapping hosts; a remote mapper that dies is dropped alone.
func TestRemovedRemotePins(t *testing.T) {
	tab, _, tables := setup(t)
	abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 99, Frame: 10}.Encode(tables[1][8*abi.GrantEntryV1Size:])
	abi.GrantEntryV1{Flags: abi.GTF_permit_access, Domid: 97, Frame: 11}.Encode(tables[1][9*abi.GrantEntryV1Size:])
	tab.PinRemote(RemotePin{Host: "b", Mapper: 99, Granter: 1, Ref: 8})
	tab.PinRemote(RemotePin{Host: "c", Mapper: 97, Granter: 1, Ref: 9})
	if got := tab.DropRemoteMapper("c", 97); len(got) != 1 || got[0].Ref != 9 {
		t.Fatalf("drop mapper: %+v", got)
	}
	r := tab.RemoveDomain(1)
	want := []RemotePin{{Host: "b", Mapper: 99, Granter: 1, Ref: 8, Frame: 10}}
	if diff := cmp.Diff(want, r.RemotePins); diff != "" {
		t.Fatalf("removed pins (-want +got):\n%s", diff)
	}
}

// Copy through a grant for a caller of another host.
func TestAccess(t *testing.T) {
	tab, fr, tables := setup(t)
	abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_readonly, Domid: 99, Frame: 10}.Encode(tables[1][8*abi.GrantEntryV1Size:])
	if _, _, st := tab.Access(99, 1, 8, false); st != GeneralError {
		t.Fatalf("write access through a read-only grant: %v", st)
	}
	page, release, st := tab.Access(99, 1, 8, true)
	if st != Okay || &page[0] != &fr.Frame(1, 10)[0] {
		t.Fatalf("access: %v", st)
	}
	if err := EndAccess(tables[1], 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("end access during a copy: %v", err)
	}
	release()
	if err := EndAccess(tables[1], 8); err != nil {
		t.Fatal(err)
	}
}

// The mapper's side: a maptrack slot per remote map, revoked by granter,
// by ref or by host.
func TestMapRemote(t *testing.T) {
	tab, _, _ := setup(t) // MaxMaps 4
	var hs []Handle
	for i, g := range []struct {
		host    string
		granter DomID
		ref     Ref
	}{{"b", 50, 8}, {"b", 50, 9}, {"b", 51, 8}, {"c", 60, 8}} {
		if !tab.HasRoom(2) {
			t.Fatalf("no room for map %d", i)
		}
		m, st := tab.MapRemote(2, g.host, g.granter, g.ref, 7, false, uint32(i))
		if st != Okay {
			t.Fatal(st)
		}
		hs = append(hs, m.Handle)
	}
	if tab.HasRoom(2) {
		t.Fatal("room past MaxMaps")
	}
	if _, st := tab.MapRemote(2, "b", 50, 10, 7, false, 9); st != NoSpace {
		t.Fatalf("map past MaxMaps: %v", st)
	}
	if got := tab.RevokeRemote("b", 50, 9); len(got) != 1 || got[0].Handle != hs[1] {
		t.Fatalf("revoke: %+v", got)
	}
	if got := tab.DropGranter("b", 51); len(got) != 1 || got[0].Handle != hs[2] {
		t.Fatalf("drop granter: %+v", got)
	}
	if got := tab.DropGranterHost("b"); len(got) != 1 || got[0].Handle != hs[0] {
		t.Fatalf("drop host: %+v", got)
	}
	m, st := tab.Unmap(2, hs[3])
	if st != Okay || m.Host != "c" || m.Granter != 60 || m.Gen != 3 {
		t.Fatalf("unmap: %+v %v", m, st)
	}
	if len(tab.Mappings(2)) != 0 {
		t.Fatalf("left: %+v", tab.Mappings(2))
	}
	// Revoked maps keep their handles (and slots) until unmapped.
	if tab.HasRoom(2) {
		if _, st := tab.MapRemote(2, "b", 50, 11, 7, false, 9); st != Okay {
			t.Fatal(st)
		}
	}
	if tab.HasRoom(2) {
		t.Fatal("revoked maps gave their slots back before their unmap")
	}
	for _, h := range hs[:3] {
		if _, st := tab.Unmap(2, h); st != Okay {
			t.Fatalf("unmap of revoked handle %d: %v", h, st)
		}
	}
	// A local granter's death leaves remote mappings alone.
	tab.MapRemote(2, "b", 1, 8, 7, false, 0)
	if r := tab.RemoveDomain(1); len(r.Revoked) != 0 {
		t.Fatalf("revoked %+v", r.Revoked)
	}
}
