package abi

import (
	"encoding/binary"
	"errors"
)

// Block protocol constants, from io/blkif.h (native x86_64 ABI).
const (
	BLKIF_OP_READ            = 0
	BLKIF_OP_WRITE           = 1
	BLKIF_OP_WRITE_BARRIER   = 2
	BLKIF_OP_FLUSH_DISKCACHE = 3
	BLKIF_OP_RESERVED_1      = 4
	BLKIF_OP_DISCARD         = 5
	BLKIF_OP_INDIRECT        = 6

	BLKIF_RSP_EOPNOTSUPP = -2
	BLKIF_RSP_ERROR      = -1
	BLKIF_RSP_OKAY       = 0

	BLKIF_DISCARD_SECURE = 1

	BLKIF_MAX_SEGMENTS_PER_REQUEST       = 11
	BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
	BLKIF_SEGS_PER_INDIRECT_FRAME        = PAGE_SIZE / BlkifSegmentSize // 512

	VDISK_CDROM     = 1
	VDISK_REMOVABLE = 2
	VDISK_READONLY  = 4

	BlkifSectorSize          = 512
	BlkifSegmentSize         = 8
	BlkifRequestSize         = 112 // also the ring entry size
	BlkifRequestDiscardSize  = 32
	BlkifRequestIndirectSize = 64
	BlkifResponseSize        = 16
)

// BlkifSegment is struct blkif_request_segment: a granted page and an
// inclusive range of 512-byte sectors in it.
type BlkifSegment struct {
	Gref      GrantRef
	FirstSect uint8
	LastSect  uint8
}

// Bytes is how many bytes the segment moves, or 0 if its sector range is
// invalid (last < first or past the page).
func (s BlkifSegment) Bytes() int {
	if s.FirstSect > s.LastSect || s.LastSect >= PAGE_SIZE/BlkifSectorSize {
		return 0
	}
	return (int(s.LastSect) - int(s.FirstSect) + 1) * BlkifSectorSize
}

// BlkifRequest is struct blkif_request (112 bytes): operation@0, nr_segments@1,
// handle@2, id@8, sector_number@16, seg[11]@24. All 11 segment slots are
// decoded; only the first NrSegments mean anything.
type BlkifRequest struct {
	Operation    uint8
	NrSegments   uint8
	Handle       uint16
	ID           uint64
	SectorNumber uint64
	Seg          [BLKIF_MAX_SEGMENTS_PER_REQUEST]BlkifSegment
}

// ErrBlkifSegments reports a request whose segment count or sector ranges
// are out of range.
var ErrBlkifSegments = errors.New("abi: bad blkif segments")

// Segments returns the request's used segments after checking the count
// and each sector range, as a backend must before acting on it.
func (r *BlkifRequest) Segments() ([]BlkifSegment, error) {
	if r.NrSegments == 0 || r.NrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
		return nil, ErrBlkifSegments
	}
	segs := r.Seg[:r.NrSegments]
	for _, s := range segs {
		if s.Bytes() == 0 {
			return nil, ErrBlkifSegments
		}
	}
	return segs, nil
}

// Encode writes r into b[:BlkifRequestSize], zeroing padding.
func (r *BlkifRequest) Encode(b []byte) {
	_ = b[BlkifRequestSize-1]
	clear(b[:BlkifRequestSize])
	le := binary.LittleEndian
	b[0] = r.Operation
	b[1] = r.NrSegments
	le.PutUint16(b[2:], r.Handle)
	le.PutUint64(b[8:], r.ID)
	le.PutUint64(b[16:], r.SectorNumber)
	for i, s := range r.Seg {
		o := 24 + i*BlkifSegmentSize
		le.PutUint32(b[o:], uint32(s.Gref))
		b[o+4] = s.FirstSect
		b[o+5] = s.LastSect
	}
}

// DecodeBlkifRequest reads a struct blkif_request. It checks only the
// length; call Segments to validate the segment list.
func DecodeBlkifRequest(b []byte) (BlkifRequest, error) {
	if len(b) < BlkifRequestSize {
		return BlkifRequest{}, errShort
	}
	le := binary.LittleEndian
	r := BlkifRequest{
		Operation:    b[0],
		NrSegments:   b[1],
		Handle:       le.Uint16(b[2:]),
		ID:           le.Uint64(b[8:]),
		SectorNumber: le.Uint64(b[16:]),
	}
	for i := range r.Seg {
		o := 24 + i*BlkifSegmentSize
		r.Seg[i] = BlkifSegment{GrantRef(le.Uint32(b[o:])), b[o+4], b[o+5]}
	}
	return r, nil
}

// BlkifRequestDiscard is struct blkif_request_discard (32 bytes).
type BlkifRequestDiscard struct {
	Operation    uint8 // BLKIF_OP_DISCARD
	Flag         uint8 // BLKIF_DISCARD_SECURE
	Handle       uint16
	ID           uint64
	SectorNumber uint64
	NrSectors    uint64
}

// Encode writes r into b[:BlkifRequestDiscardSize], zeroing padding.
func (r *BlkifRequestDiscard) Encode(b []byte) {
	_ = b[BlkifRequestDiscardSize-1]
	clear(b[:BlkifRequestDiscardSize])
	le := binary.LittleEndian
	b[0], b[1] = r.Operation, r.Flag
	le.PutUint16(b[2:], r.Handle)
	le.PutUint64(b[8:], r.ID)
	le.PutUint64(b[16:], r.SectorNumber)
	le.PutUint64(b[24:], r.NrSectors)
}

// DecodeBlkifRequestDiscard reads a struct blkif_request_discard.
func DecodeBlkifRequestDiscard(b []byte) (BlkifRequestDiscard, error) {
	if len(b) < BlkifRequestDiscardSize {
		return BlkifRequestDiscard{}, errShort
	}
	le := binary.LittleEndian
	return BlkifRequestDiscard{
		Operation:    b[0],
		Flag:         b[1],
		Handle:       le.Uint16(b[2:]),
		ID:           le.Uint64(b[8:]),
		SectorNumber: le.Uint64(b[16:]),
		NrSectors:    le.Uint64(b[24:]),
	}, nil
}

// BlkifRequestIndirect is struct blkif_request_indirect (64 bytes): the
// segment descriptors live in up to 8 granted pages of 512 each.
type BlkifRequestIndirect struct {
	Operation     uint8 // BLKIF_OP_INDIRECT
	IndirectOp    uint8 // BLKIF_OP_READ or BLKIF_OP_WRITE
	NrSegments    uint16
	ID            uint64
	SectorNumber  uint64
	Handle        uint16
	IndirectGrefs [BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST]GrantRef
}

// IndirectPages is how many indirect pages NrSegments needs.
func (r *BlkifRequestIndirect) IndirectPages() int {
	return (int(r.NrSegments) + BLKIF_SEGS_PER_INDIRECT_FRAME - 1) / BLKIF_SEGS_PER_INDIRECT_FRAME
}

// Encode writes r into b[:BlkifRequestIndirectSize], zeroing padding.
func (r *BlkifRequestIndirect) Encode(b []byte) {
	_ = b[BlkifRequestIndirectSize-1]
	clear(b[:BlkifRequestIndirectSize])
	le := binary.LittleEndian
	b[0], b[1] = r.Operation, r.IndirectOp
	le.PutUint16(b[2:], r.NrSegments)
	le.PutUint64(b[8:], r.ID)
	le.PutUint64(b[16:], r.SectorNumber)
	le.PutUint16(b[24:], r.Handle)
	for i, g := range r.IndirectGrefs {
		le.PutUint32(b[28+4*i:], uint32(g))
	}
}

// DecodeBlkifRequestIndirect reads a struct blkif_request_indirect.
func DecodeBlkifRequestIndirect(b []byte) (BlkifRequestIndirect, error) {
	if len(b) < BlkifRequestIndirectSize {
		return BlkifRequestIndirect{}, errShort
	}
	le := binary.LittleEndian
	r := BlkifRequestIndirect{
		Operation:    b[0],
		IndirectOp:   b[1],
		NrSegments:   le.Uint16(b[2:]),
		ID:           le.Uint64(b[8:]),
		SectorNumber: le.Uint64(b[16:]),
		Handle:       le.Uint16(b[24:]),
	}
	for i := range r.IndirectGrefs {
		r.IndirectGrefs[i] = GrantRef(le.Uint32(b[28+4*i:]))
	}
	return r, nil
}

// DecodeBlkifSegment reads one 8-byte segment descriptor, as found in an
// indirect page.
func DecodeBlkifSegment(b []byte) (BlkifSegment, error) {
	if len(b) < BlkifSegmentSize {
		return BlkifSegment{}, errShort
	}
	return BlkifSegment{GrantRef(binary.LittleEndian.Uint32(b)), b[4], b[5]}, nil
}

// Encode writes s into b[:BlkifSegmentSize], zeroing padding.
func (s BlkifSegment) Encode(b []byte) {
	_ = b[BlkifSegmentSize-1]
	binary.LittleEndian.PutUint32(b, uint32(s.Gref))
	b[4], b[5], b[6], b[7] = s.FirstSect, s.LastSect, 0, 0
}

// BlkifResponse is struct blkif_response (16 bytes): id@0, operation@8,
// status@10.
type BlkifResponse struct {
	ID        uint64
	Operation uint8
	Status    int16
}

// Encode writes r into b[:BlkifResponseSize], zeroing padding.
func (r *BlkifResponse) Encode(b []byte) {
	_ = b[BlkifResponseSize-1]
	clear(b[:BlkifResponseSize])
	binary.LittleEndian.PutUint64(b[0:], r.ID)
	b[8] = r.Operation
	binary.LittleEndian.PutUint16(b[10:], uint16(r.Status))
}

// DecodeBlkifResponse reads a struct blkif_response.
func DecodeBlkifResponse(b []byte) (BlkifResponse, error) {
	if len(b) < BlkifResponseSize {
		return BlkifResponse{}, errShort
	}
	return BlkifResponse{
		ID:        binary.LittleEndian.Uint64(b[0:]),
		Operation: b[8],
		Status:    int16(binary.LittleEndian.Uint16(b[10:])),
	}, nil
}
