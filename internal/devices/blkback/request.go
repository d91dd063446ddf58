package blkback

import (
	"encoding/binary"
	"errors"
	"fmt"

	"shi/internal/abi"
)

// Geometry is what request validation needs to know about a disk.
type Geometry struct {
	Sectors     uint64 // 512-byte sectors
	ReadOnly    bool
	Discard     bool // feature-discard was published
	MaxIndirect int  // feature-max-indirect-segments; 0: no indirect requests
}

// Kind is what a request asks the store to do.
type Kind uint8

// Kinds of Request.
const (
	KindRead Kind = iota + 1
	KindWrite
	KindFlush // store.Flush; with segments, write them first
	KindDiscard
)

// Request is one validated blkif request, copied out of the ring. Its
// segments are checked against the disk's size; their grants are not
// (the store of grants is the hypervisor's, and a map of a ref the front
// end did not grant fails there).
type Request struct {
	Kind      Kind
	ID        uint64 // echoed in the response
	Operation uint8  // the ring operation, echoed in the response
	Sector    uint64 // first 512-byte sector
	NrSectors uint64 // total sectors moved or discarded
	Segs      []abi.BlkifSegment

	// Indirect requests: the pages holding the segment descriptors,
	// which ReadIndirect decodes. Segs is empty until then.
	IndirectGrefs []abi.GrantRef
	nrIndirect    int
}

// Errors of request validation. Each becomes a response status: ErrNotSupported
// BLKIF_RSP_EOPNOTSUPP, the rest BLKIF_RSP_ERROR.
var (
	ErrNotSupported = errors.New("blkback: operation not supported")
	ErrReadOnly     = errors.New("blkback: write to a read-only disk")
	ErrBadRequest   = errors.New("blkback: malformed request")
	ErrOutOfRange   = errors.New("blkback: sectors past the end of the disk")
)

// Status is the response status for a request's outcome.
func Status(err error) int16 {
	switch {
	case err == nil:
		return abi.BLKIF_RSP_OKAY
	case errors.Is(err, ErrNotSupported):
		return abi.BLKIF_RSP_EOPNOTSUPP
	}
	return abi.BLKIF_RSP_ERROR
}

// RequestHeader reads the id and operation of a ring entry, for the
// response to a request that fails validation.
func RequestHeader(b []byte) (id uint64, op uint8) {
	if len(b) < 16 {
		return 0, 0
	}
	return binary.LittleEndian.Uint64(b[8:]), b[0]
}

// Parse decodes and validates one ring entry (abi.BlkifRequestSize bytes,
// copied out of shared memory) for a disk of geometry g. An indirect
// request comes back with IndirectGrefs set: map them and call
// ReadIndirect.
func Parse(b []byte, g Geometry) (Request, error) {
	if len(b) < abi.BlkifRequestSize {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrBadRequest, len(b))
	}
	op := b[0]
	switch op {
	case abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE, abi.BLKIF_OP_FLUSH_DISKCACHE:
		r, _ := abi.DecodeBlkifRequest(b)
		req := Request{ID: r.ID, Operation: op, Sector: r.SectorNumber}
		switch op {
		case abi.BLKIF_OP_READ:
			req.Kind = KindRead
		case abi.BLKIF_OP_WRITE:
			req.Kind = KindWrite
		default:
			req.Kind = KindFlush
			if r.NrSegments == 0 {
				return req, nil
			}
		}
		if r.NrSegments == 0 || r.NrSegments > abi.BLKIF_MAX_SEGMENTS_PER_REQUEST {
			return req, fmt.Errorf("%w: %d segments", ErrBadRequest, r.NrSegments)
		}
		req.Segs = append([]abi.BlkifSegment(nil), r.Seg[:r.NrSegments]...)
		return req, req.check(g)
	case abi.BLKIF_OP_DISCARD:
		d, _ := abi.DecodeBlkifRequestDiscard(b)
		req := Request{Kind: KindDiscard, ID: d.ID, Operation: op, Sector: d.SectorNumber, NrSectors: d.NrSectors}
		switch {
		case !g.Discard || d.Flag&abi.BLKIF_DISCARD_SECURE != 0:
			return req, ErrNotSupported
		case g.ReadOnly:
			return req, ErrReadOnly
		}
		return req, inRange(req.Sector, req.NrSectors, g)
	case abi.BLKIF_OP_INDIRECT:
		r, _ := abi.DecodeBlkifRequestIndirect(b)
		req := Request{ID: r.ID, Operation: op, Sector: r.SectorNumber}
		switch r.IndirectOp {
		case abi.BLKIF_OP_READ:
			req.Kind = KindRead
		case abi.BLKIF_OP_WRITE:
			req.Kind = KindWrite
		default:
			return req, fmt.Errorf("%w: indirect operation %d", ErrBadRequest, r.IndirectOp)
		}
		if g.MaxIndirect == 0 {
			return req, ErrNotSupported
		}
		if r.NrSegments == 0 || int(r.NrSegments) > g.MaxIndirect ||
			int(r.NrSegments) > abi.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST*abi.BLKIF_SEGS_PER_INDIRECT_FRAME {
			return req, fmt.Errorf("%w: %d indirect segments", ErrBadRequest, r.NrSegments)
		}
		if req.Kind == KindWrite && g.ReadOnly {
			return req, ErrReadOnly
		}
		req.nrIndirect = int(r.NrSegments)
		req.IndirectGrefs = append([]abi.GrantRef(nil), r.IndirectGrefs[:r.IndirectPages()]...)
		return req, nil
	case abi.BLKIF_OP_WRITE_BARRIER, abi.BLKIF_OP_RESERVED_1:
		r, _ := abi.DecodeBlkifRequest(b)
		return Request{ID: r.ID, Operation: op}, ErrNotSupported
	}
	id, _ := RequestHeader(b)
	return Request{ID: id, Operation: op}, fmt.Errorf("%w: operation %d", ErrBadRequest, op)
}

// ReadIndirect decodes an indirect request's segment descriptors from its
// indirect pages, laid end to end in pages (copied out of shared memory
// or not: each descriptor is read once), and validates them.
func (r *Request) ReadIndirect(pages []byte, g Geometry) error {
	if r.nrIndirect == 0 || len(r.Segs) > 0 {
		return fmt.Errorf("%w: not an undecoded indirect request", ErrBadRequest)
	}
	if len(pages) < r.nrIndirect*abi.BlkifSegmentSize {
		return fmt.Errorf("%w: %d bytes of indirect pages for %d segments", ErrBadRequest, len(pages), r.nrIndirect)
	}
	r.Segs = make([]abi.BlkifSegment, r.nrIndirect)
	for i := range r.Segs {
		r.Segs[i], _ = abi.DecodeBlkifSegment(pages[i*abi.BlkifSegmentSize:])
	}
	return r.check(g)
}

// check validates the segments' sector ranges and the whole request's
// place on the disk.
func (r *Request) check(g Geometry) error {
	if (r.Kind == KindWrite || r.Kind == KindFlush) && g.ReadOnly {
		return ErrReadOnly
	}
	var n uint64
	for i, s := range r.Segs {
		b := s.Bytes()
		if b == 0 {
			return fmt.Errorf("%w: segment %d sectors %d..%d", ErrBadRequest, i, s.FirstSect, s.LastSect)
		}
		n += uint64(b / abi.BlkifSectorSize)
	}
	r.NrSectors = n
	return inRange(r.Sector, n, g)
}

// inRange checks sectors [start, start+n) against the disk, without
// overflow.
func inRange(start, n uint64, g Geometry) error {
	if start > g.Sectors || n > g.Sectors-start {
		return fmt.Errorf("%w: %d+%d of %d", ErrOutOfRange, start, n, g.Sectors)
	}
	return nil
}
