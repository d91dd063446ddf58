package gnttab

import (
	"shi/internal/abi"
	"shi/internal/grantentry"
	"shi/internal/ring"
)

type (
	// DomID is a domain id (domid_t).
	DomID = abi.DomID
	// Ref is a grant reference (grant_ref_t).
	Ref = abi.GrantRef
	// Handle is a map handle (grant_handle_t), per mapping domain.
	Handle = abi.GrantHandle
)

// Status is a GNTST_* code.
type Status int16

func (s Status) String() string { return abi.GNTSTString(int16(s)) }

// Status codes used here; see abi.GNTST_*.
const (
	Okay             Status = abi.GNTST_okay
	GeneralError     Status = abi.GNTST_general_error
	BadDomain        Status = abi.GNTST_bad_domain
	BadGntref        Status = abi.GNTST_bad_gntref
	BadHandle        Status = abi.GNTST_bad_handle
	PermissionDenied Status = abi.GNTST_permission_denied
	BadPage          Status = abi.GNTST_bad_page
	BadCopyArg       Status = abi.GNTST_bad_copy_arg
	NoSpace          Status = abi.GNTST_no_space
)

// Entry words: the first u32 of a v1 entry holds flags (low half) and
// domid (high half), so one CAS checks the domid while it sets flags, as
// Xen does.
func entryOff(ref Ref) int { return grantentry.Off(ref) }

// Entries is how many v1 entries a grant table of that many bytes holds.
func Entries(table []byte) int { return grantentry.Entries(table) }

// ReadEntry atomically reads entry ref of a grant table (flags and domid
// in one load, then frame).
func ReadEntry(table []byte, ref Ref) abi.GrantEntryV1 { return grantentry.Read(table, ref) }

// Check validates, without pinning, that entry ref lets dom access the
// frame (read-only if readonly): the check Map and Copy start with. It
// returns the frame named by the entry.
func Check(table []byte, ref Ref, dom DomID, readonly bool) (uint32, Status) {
	if int64(ref) >= int64(Entries(table)) {
		return 0, BadGntref
	}
	e := ReadEntry(table, ref)
	if e.Flags&abi.GTF_type_mask != abi.GTF_permit_access || e.Domid != dom ||
		(!readonly && e.Flags&abi.GTF_readonly != 0) {
		return 0, GeneralError
	}
	return e.Frame, Okay
}

// maxCASRetries bounds how often we retry a CAS on a word the guest keeps
// changing, as Xen's _set_status does, so a hostile guest cannot livelock
// the agent.
const maxCASRetries = 5

// setStatus is Xen's _set_status_v1: atomically set GTF_reading (and
// GTF_writing unless readonly) in entry ref after checking type and domid.
// If the entry is already pinned, the type/domid check is skipped (the
// active entry was validated when first pinned). mapping adds GTF_sub_page
// to the type check: sub-page grants are for copy only.
func setStatus(table []byte, ref Ref, dom DomID, readonly, mapping, pinned bool) Status {
	mask := uint16(abi.GTF_type_mask)
	if mapping {
		mask |= abi.GTF_sub_page
	}
	off := entryOff(ref)
	cur := ring.Load32(table, off)
	for range maxCASRetries {
		flags, domid := uint16(cur), DomID(cur>>16)
		if !pinned && (flags&mask != abi.GTF_permit_access || domid != dom) {
			return GeneralError
		}
		nflags := flags | abi.GTF_reading
		if !readonly {
			if flags&abi.GTF_readonly != 0 {
				return GeneralError
			}
			nflags |= abi.GTF_writing
		}
		if ring.CompareAndSwap32(table, off, cur, cur&^0xffff|uint32(nflags)) {
			return Okay
		}
		cur = ring.Load32(table, off)
	}
	return GeneralError // the shared entry is unstable
}

// clearFlags atomically clears bits in entry ref's flags; it cannot fail,
// whatever the guest does to the word meanwhile.
func clearFlags(table []byte, ref Ref, bits uint16) {
	ring.And32(table, entryOff(ref), ^uint32(bits))
}

// The granting side lives in internal/grantentry, shared with the guest
// library; these names are kept for the agent's callers and tests.

var (
	// ErrBusy means the entry is still in use (mapped, or not yet ended).
	ErrBusy = grantentry.ErrBusy
	// ErrRef means the reference is outside the table.
	ErrRef = grantentry.ErrRef
)

// GrantAccess is grantentry.GrantAccess.
func GrantAccess(table []byte, ref Ref, dom DomID, frame uint32, readonly bool) error {
	return grantentry.GrantAccess(table, ref, dom, frame, readonly)
}

// EndAccess is grantentry.EndAccess.
func EndAccess(table []byte, ref Ref) error { return grantentry.EndAccess(table, ref) }
