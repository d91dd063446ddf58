package abi

import "encoding/binary"

// GrantRef is grant_ref_t and GrantHandle is grant_handle_t, from
// grant_table.h.
type (
	GrantRef    uint32
	GrantHandle uint32
)

// PAGE_SIZE is the page size of every grant and ring protocol, whatever the
// host's page size.
const PAGE_SIZE = 4096

// Grant entry sizes, from grant_table.h.
const (
	GrantEntryV1Size    = 8
	GrantEntryV2Size    = 16
	GrantEntriesPerPage = PAGE_SIZE / GrantEntryV1Size // v1: 512
)

// GNTTAB_NR_RESERVED_ENTRIES are the toolstack's refs; dynamic grants start
// after them.
const (
	GNTTAB_NR_RESERVED_ENTRIES = 8
	GNTTAB_RESERVED_CONSOLE    = 0
	GNTTAB_RESERVED_XENSTORE   = 1
)

// GTF_* grant entry flags (grant_entry_v1.flags), from grant_table.h.
// The type lives in bits 0-1.
const (
	GTF_invalid         = 0
	GTF_permit_access   = 1
	GTF_accept_transfer = 2
	GTF_transitive      = 3
	GTF_type_mask       = 3

	GTF_readonly = 1 << 2 // permit_access: the grantee may only read
	GTF_reading  = 1 << 3 // set by the hypervisor while mapped
	GTF_writing  = 1 << 4 // set by the hypervisor while mapped writable
	GTF_PWT      = 1 << 5
	GTF_PCD      = 1 << 6
	GTF_PAT      = 1 << 7
	GTF_sub_page = 1 << 8 // copy only (v2)

	// GTF_shi_mapped is shi's own, in a bit Xen leaves unused: the agent
	// sets it with GTF_reading when it hands the page to a mapper, and
	// only the granter's end of access clears it. It tells the granter
	// that the page must be replaced (guest/gnttab). Xen guests, which
	// end access with a compare-and-swap of whatever flags they read,
	// are unaffected.
	GTF_shi_mapped = 1 << 15

	GTF_transfer_committed = 1 << 2
	GTF_transfer_completed = 1 << 3
)

// GNTTABOP_* hypercall commands, from grant_table.h.
const (
	GNTTABOP_map_grant_ref     = 0
	GNTTABOP_unmap_grant_ref   = 1
	GNTTABOP_setup_table       = 2
	GNTTABOP_dump_table        = 3
	GNTTABOP_transfer          = 4
	GNTTABOP_copy              = 5
	GNTTABOP_query_size        = 6
	GNTTABOP_unmap_and_replace = 7
	GNTTABOP_set_version       = 8
	GNTTABOP_get_status_frames = 9
	GNTTABOP_get_version       = 10
	GNTTABOP_swap_grant_ref    = 11
	GNTTABOP_cache_flush       = 12
)

// GNTMAP_* map flags, from grant_table.h.
const (
	GNTMAP_device_map      = 1 << 0
	GNTMAP_host_map        = 1 << 1
	GNTMAP_readonly        = 1 << 2
	GNTMAP_application_map = 1 << 3
	GNTMAP_contains_pte    = 1 << 4
)

// GNTCOPY_* copy flags: which side of a gnttab_copy names a grant ref.
const (
	GNTCOPY_source_gref = 1 << 0
	GNTCOPY_dest_gref   = 1 << 1
)

// GNTST_* status codes, from grant_table.h.
const (
	GNTST_okay              = 0
	GNTST_general_error     = -1
	GNTST_bad_domain        = -2
	GNTST_bad_gntref        = -3
	GNTST_bad_handle        = -4
	GNTST_bad_virt_addr     = -5
	GNTST_bad_dev_addr      = -6
	GNTST_no_device_space   = -7
	GNTST_permission_denied = -8
	GNTST_bad_page          = -9
	GNTST_bad_copy_arg      = -10
	GNTST_address_too_big   = -11
	GNTST_eagain            = -12
	GNTST_no_space          = -13
)

// gnttabStatus is GNTTABOP_error_msgs from grant_table.h.
var gnttabStatus = [...]string{
	"okay",
	"undefined error",
	"unrecognised domain id",
	"invalid grant reference",
	"invalid mapping handle",
	"invalid virtual address",
	"invalid device address",
	"no spare translation slot in the I/O MMU",
	"permission denied",
	"bad page",
	"copy arguments cross page boundary",
	"page address size too large",
	"operation not done; try again",
	"out of space",
}

// GNTSTString returns Xen's message for a GNTST_* code.
func GNTSTString(st int16) string {
	if st <= 0 && int(-st) < len(gnttabStatus) {
		return gnttabStatus[-st]
	}
	return "unknown grant status"
}

// GrantEntryV1 is struct grant_entry_v1: flags@0:2, domid@2:2, frame@4:4.
// A granting domain writes domid and frame, then flags last; the agent
// reads and updates flags atomically (see internal/gnttab), so these
// helpers are for tests and dumps, not for live shared pages.
type GrantEntryV1 struct {
	Flags uint16
	Domid DomID
	Frame uint32
}

// Encode writes e into b[:GrantEntryV1Size].
func (e GrantEntryV1) Encode(b []byte) {
	_ = b[GrantEntryV1Size-1]
	binary.LittleEndian.PutUint16(b[0:], e.Flags)
	binary.LittleEndian.PutUint16(b[2:], uint16(e.Domid))
	binary.LittleEndian.PutUint32(b[4:], e.Frame)
}

// DecodeGrantEntryV1 reads a v1 grant entry from b[:GrantEntryV1Size].
func DecodeGrantEntryV1(b []byte) (GrantEntryV1, error) {
	if len(b) < GrantEntryV1Size {
		return GrantEntryV1{}, errShort
	}
	return GrantEntryV1{
		Flags: binary.LittleEndian.Uint16(b[0:]),
		Domid: DomID(binary.LittleEndian.Uint16(b[2:])),
		Frame: binary.LittleEndian.Uint32(b[4:]),
	}, nil
}

// Offsets inside struct gnttab_copy (40 bytes): source and dest are each
// {u: ref u32 or gmfn u64 @0, domid u16 @8, offset u16 @10} (16 bytes).
const (
	GnttabCopySize      = 40
	GnttabCopySourceOff = 0
	GnttabCopyDestOff   = 16
	GnttabCopyLenOff    = 32
	GnttabCopyFlagsOff  = 34
	GnttabCopyStatusOff = 36
)
