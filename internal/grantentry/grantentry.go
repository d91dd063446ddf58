// Package grantentry reads and writes v1 grant entries (grant_entry_v1 of
// grant_table.h) in a grant-table page held as []byte. It is shared by the
// granting side (guest/gnttab, in the domain) and the checking side
// (internal/gnttab, in the agent), which must agree on every bit.
//
// An entry is two u32 words: flags (low half) and domid (high half), then
// the frame. Both sides touch the first word only atomically, because the
// other side writes it concurrently. Every table passed here must be
// 4-byte aligned (mmap'ed memory is; see ring.AlignedBytes for tests).
package grantentry

import (
	"errors"

	"shi/internal/abi"
	"shi/internal/ring"
)

var (
	// ErrBusy means the entry is still in use (mapped, or not yet ended).
	ErrBusy = errors.New("gnttab: grant entry in use")
	// ErrRef means the reference is outside the table.
	ErrRef = errors.New("gnttab: grant reference out of range")
	// ErrNotGranted means the entry grants nothing (already ended, or
	// never written).
	ErrNotGranted = errors.New("gnttab: grant entry not in use")
)

// Off is the byte offset of entry ref.
func Off(ref abi.GrantRef) int { return int(ref) * abi.GrantEntryV1Size }

// Entries is how many v1 entries a grant table of that many bytes holds.
func Entries(table []byte) int { return len(table) / abi.GrantEntryV1Size }

// InRange reports whether ref names an entry of table.
func InRange(table []byte, ref abi.GrantRef) bool { return int64(ref) < int64(Entries(table)) }

// Read atomically reads entry ref (flags and domid in one load, then
// frame). ref must be in range.
func Read(table []byte, ref abi.GrantRef) abi.GrantEntryV1 {
	w := ring.Load32(table, Off(ref))
	return abi.GrantEntryV1{Flags: uint16(w), Domid: abi.DomID(w >> 16), Frame: ring.Load32(table, Off(ref)+4)}
}

// GrantAccess writes entry ref granting dom access to frame, as Linux's
// gnttab_grant_foreign_access_ref does: frame first, then domid and flags
// in one store, so that a reader that sees the type sees the rest. It
// refuses an entry whose flags are not zero.
func GrantAccess(table []byte, ref abi.GrantRef, dom abi.DomID, frame uint32, readonly bool) error {
	if !InRange(table, ref) {
		return ErrRef
	}
	off := Off(ref)
	if uint16(ring.Load32(table, off)) != 0 {
		return ErrBusy
	}
	flags := uint32(abi.GTF_permit_access)
	if readonly {
		flags |= abi.GTF_readonly
	}
	ring.Store32(table, off+4, frame)
	ring.Store32(table, off, uint32(dom)<<16|flags)
	return nil
}

// EndAccess revokes entry ref (gnttab_end_foreign_access_ref): a CAS of
// flags to 0 that fails with ErrBusy while the grantee has it mapped (or
// is copying through it), i.e. while GTF_reading or GTF_writing is set.
func EndAccess(table []byte, ref abi.GrantRef) error {
	_, err := End(table, ref)
	return err
}

// End is EndAccess that also returns the flags it cleared.
func End(table []byte, ref abi.GrantRef) (uint16, error) {
	if !InRange(table, ref) {
		return 0, ErrRef
	}
	off := Off(ref)
	for {
		cur := ring.Load32(table, off)
		if uint16(cur)&(abi.GTF_reading|abi.GTF_writing) != 0 {
			return 0, ErrBusy
		}
		// Ending an ended entry would let its owner free the ref twice
		// and hand it to two grants.
		if uint16(cur)&abi.GTF_type_mask == abi.GTF_invalid {
			return 0, ErrNotGranted
		}
		if ring.CompareAndSwap32(table, off, cur, cur&^0xffff) {
			return uint16(cur), nil
		}
	}
}
