package grantentry

import (
	"errors"
	"testing"

	"shi/internal/abi"
	"shi/internal/ring"
)

func TestGrantAndEnd(t *testing.T) {
	gt := ring.AlignedBytes(abi.PAGE_SIZE)
	if Entries(gt) != abi.GrantEntriesPerPage {
		t.Fatalf("entries = %d", Entries(gt))
	}
	if err := GrantAccess(gt, 8, 5, 77, true); err != nil {
		t.Fatal(err)
	}
	e := Read(gt, 8)
	want := abi.GrantEntryV1{Flags: abi.GTF_permit_access | abi.GTF_readonly, Domid: 5, Frame: 77}
	if e != want {
		t.Fatalf("entry = %+v, want %+v", e, want)
	}
	if err := GrantAccess(gt, 8, 6, 1, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("regrant of a live entry: %v", err)
	}
	// The hypervisor marks it mapped: ending access must fail.
	ring.Or32(gt, Off(8), abi.GTF_reading)
	if err := EndAccess(gt, 8); !errors.Is(err, ErrBusy) {
		t.Fatalf("end while mapped: %v", err)
	}
	ring.And32(gt, Off(8), ^uint32(abi.GTF_reading))
	if err := EndAccess(gt, 8); err != nil {
		t.Fatal(err)
	}
	if f := Read(gt, 8).Flags; f != 0 {
		t.Fatalf("flags after end = %#x", f)
	}
	if err := EndAccess(gt, 8); !errors.Is(err, ErrNotGranted) {
		t.Fatalf("second end: %v", err)
	}
	if err := GrantAccess(gt, abi.GrantEntriesPerPage, 1, 1, false); !errors.Is(err, ErrRef) {
		t.Fatalf("out of range grant: %v", err)
	}
	if err := EndAccess(gt, abi.GrantEntriesPerPage); !errors.Is(err, ErrRef) {
		t.Fatalf("out of range end: %v", err)
	}
}
