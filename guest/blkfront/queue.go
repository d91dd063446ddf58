package blkfront

import (
	"errors"
	"fmt"
	"syscall"

	"shi/internal/abi"
	"shi/internal/ring"
)

// ErrProtocol means the back end broke the ring protocol: a response to
// a request it was not given, with the wrong operation, or an index past
// what was asked. The disk is unusable afterwards (Linux's blkfront
// gives up the same way): every request fails with it. It wraps
// syscall.EIO.
var ErrProtocol = fmt.Errorf("blkfront: the back end broke the ring protocol: %w", syscall.EIO)

// ErrNotSupported is a request the back end answered BLKIF_RSP_EOPNOTSUPP.
var ErrNotSupported = fmt.Errorf("blkfront: the back end does not support the operation: %w", syscall.EOPNOTSUPP)

// errIO is a request the back end answered BLKIF_RSP_ERROR (or with a
// status blkif.h does not define).
var errIO = fmt.Errorf("blkfront: the back end failed the request: %w", syscall.EIO)

// request is one blkif request and its caller's wait.
type request struct {
	op     uint8  // BLKIF_OP_READ, _WRITE, _FLUSH_DISKCACHE or _DISCARD
	sector uint64 // in 512-byte units
	n      int    // bytes moved (READ, WRITE)
	nsect  uint64 // DISCARD's sectors
	buf    []byte // READ: where the data goes; WRITE: where it comes from

	// Set by queue.reserve.
	id       uint64
	pages    []int32 // pool pages holding the data, one segment each
	indirect []int32 // pool pages holding the segment descriptors
	produced bool    // in the ring: only now may a response name it

	err  error
	done chan error // receives err once
}

// segments is how many pool pages r's data needs.
func (r *request) segments() int { return (r.n + abi.PAGE_SIZE - 1) / abi.PAGE_SIZE }

// queue is the front end's side of the ring without any I/O: request ids,
// the pool's pages, encoding requests and matching responses. It works
// on plain memory, so the decoding of everything the back end writes is
// tested and fuzzed without a hypervisor. Not safe for concurrent use
// (Disk.mu guards it).
type queue struct {
	front *ring.Front
	ring  []byte
	wrote func(b []byte) // reports every write to shared memory

	// reqs holds the request of each id slot; an id is its slot in the
	// low 16 bits and the slot's generation above, so that a response
	// replayed for a request already answered names no request.
	reqs    []*request
	gens    []uint32
	freeIDs []uint16
	busy    int // ids reserved or in flight

	pool      []byte // the pool's pages, side by side
	grefs     []abi.GrantRef
	freePages []int32

	handle   uint16 // the virtual device, as requests carry it
	maxSegs  int    // per request: 11, or the indirect limit
	indirect bool   // the back end takes BLKIF_OP_INDIRECT
}

// newQueue attaches to a ring its caller initialised, with a pool of
// pages granted as grefs.
func newQueue(shared []byte, pool []byte, grefs []abi.GrantRef, handle uint16, maxIndirect int, wrote func([]byte)) (*queue, error) {
	f, err := ring.NewFront(shared, abi.BlkifRequestSize)
	if err != nil {
		return nil, err
	}
	if len(pool) != len(grefs)*abi.PAGE_SIZE || len(grefs) == 0 {
		return nil, fmt.Errorf("blkfront: pool of %d bytes for %d grants: %w", len(pool), len(grefs), syscall.EINVAL)
	}
	n := int(f.Size())
	q := &queue{front: f, ring: shared, wrote: wrote, reqs: make([]*request, n), gens: make([]uint32, n),
		pool: pool, grefs: grefs, handle: handle, maxSegs: abi.BLKIF_MAX_SEGMENTS_PER_REQUEST}
	for i := n - 1; i >= 0; i-- {
		q.freeIDs = append(q.freeIDs, uint16(i))
	}
	for i := len(grefs) - 1; i >= 0; i-- {
		q.freePages = append(q.freePages, int32(i))
	}
	if maxIndirect > abi.BLKIF_MAX_SEGMENTS_PER_REQUEST {
		q.indirect = true
		// A request must fit the pool (with its descriptor pages).
		limit := min(maxIndirect, abi.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST*abi.BLKIF_SEGS_PER_INDIRECT_FRAME)
		for limit > abi.BLKIF_MAX_SEGMENTS_PER_REQUEST && limit+indirectPages(limit) > len(grefs) {
			limit /= 2
		}
		q.maxSegs = max(limit, abi.BLKIF_MAX_SEGMENTS_PER_REQUEST)
		q.indirect = q.maxSegs > abi.BLKIF_MAX_SEGMENTS_PER_REQUEST
	}
	if q.maxSegs > len(grefs) {
		q.maxSegs = len(grefs)
	}
	return q, nil
}

// indirectPages is how many descriptor pages segs segments need.
func indirectPages(segs int) int {
	return (segs + abi.BLKIF_SEGS_PER_INDIRECT_FRAME - 1) / abi.BLKIF_SEGS_PER_INDIRECT_FRAME
}

// maxBytes is the most one READ or WRITE request moves.
func (q *queue) maxBytes() int { return q.maxSegs * abi.PAGE_SIZE }

// needs is the pool pages r takes: its data, and its descriptors if it
// goes indirect.
func (q *queue) needs(r *request) (data, desc int) {
	data = r.segments()
	if data > abi.BLKIF_MAX_SEGMENTS_PER_REQUEST {
		desc = indirectPages(data)
	}
	return data, desc
}

// fits reports whether r could ever be reserved: the pool holds its pages.
func (q *queue) fits(r *request) bool {
	data, desc := q.needs(r)
	return data+desc <= len(q.grefs) && (desc == 0 || q.indirect)
}

// canReserve reports whether an id and r's pages are free now.
func (q *queue) canReserve(r *request) bool {
	data, desc := q.needs(r)
	return len(q.freeIDs) > 0 && len(q.freePages) >= data+desc
}

// reserve gives r an id and its pages. Preconditions: canReserve(r).
func (q *queue) reserve(r *request) {
	slot := q.freeIDs[len(q.freeIDs)-1]
	q.freeIDs = q.freeIDs[:len(q.freeIDs)-1]
	q.busy++
	q.gens[slot]++
	r.id = uint64(q.gens[slot])<<16 | uint64(slot)
	r.produced = false
	q.reqs[slot] = r
	data, desc := q.needs(r)
	r.pages = q.takePages(data)
	r.indirect = q.takePages(desc)
}

func (q *queue) takePages(n int) []int32 {
	if n == 0 {
		return nil
	}
	k := len(q.freePages) - n
	p := append([]int32(nil), q.freePages[k:]...)
	q.freePages = q.freePages[:k]
	return p
}

// page is pool page i.
func (q *queue) page(i int32) []byte {
	o := int(i) * abi.PAGE_SIZE
	return q.pool[o : o+abi.PAGE_SIZE : o+abi.PAGE_SIZE]
}

// fill copies a WRITE's data into its pages and a request's segment
// descriptors into its indirect pages, reporting each write. The pages
// are r's alone, so this runs without the lock.
func (q *queue) fill(r *request) {
	if r.op == abi.BLKIF_OP_WRITE {
		for i, pg := range r.pages {
			b := q.page(pg)[:copy(q.page(pg), r.buf[i*abi.PAGE_SIZE:])]
			q.wrote(b)
		}
	}
	if len(r.indirect) == 0 {
		return
	}
	for i := range r.pages {
		pg := q.page(r.indirect[i/abi.BLKIF_SEGS_PER_INDIRECT_FRAME])
		o := i % abi.BLKIF_SEGS_PER_INDIRECT_FRAME * abi.BlkifSegmentSize
		q.segment(r, i).Encode(pg[o:])
	}
	for i, ip := range r.indirect {
		segs := min(len(r.pages)-i*abi.BLKIF_SEGS_PER_INDIRECT_FRAME, abi.BLKIF_SEGS_PER_INDIRECT_FRAME)
		q.wrote(q.page(ip)[:segs*abi.BlkifSegmentSize])
	}
}

// segment is r's i-th segment: a whole page but for a short last one.
func (q *queue) segment(r *request, i int) abi.BlkifSegment {
	bytes := min(r.n-i*abi.PAGE_SIZE, abi.PAGE_SIZE)
	return abi.BlkifSegment{Gref: q.grefs[r.pages[i]], FirstSect: 0, LastSect: uint8(bytes/abi.BlkifSectorSize - 1)}
}

// produce writes r into the next ring slot (not yet pushed).
// Preconditions: r reserved and filled.
func (q *queue) produce(r *request) {
	slot := q.front.NextRequest() // never nil: ids are as many as slots
	clear(slot)
	switch {
	case r.op == abi.BLKIF_OP_DISCARD:
		d := abi.BlkifRequestDiscard{Operation: r.op, Handle: q.handle, ID: r.id, SectorNumber: r.sector, NrSectors: r.nsect}
		d.Encode(slot)
	case len(r.indirect) > 0:
		ind := abi.BlkifRequestIndirect{Operation: abi.BLKIF_OP_INDIRECT, IndirectOp: r.op, NrSegments: uint16(len(r.pages)),
			ID: r.id, SectorNumber: r.sector, Handle: q.handle}
		for i, ip := range r.indirect {
			ind.IndirectGrefs[i] = q.grefs[ip]
		}
		ind.Encode(slot)
	default:
		rq := abi.BlkifRequest{Operation: r.op, NrSegments: uint8(len(r.pages)), Handle: q.handle, ID: r.id, SectorNumber: r.sector}
		for i := range r.pages {
			rq.Seg[i] = q.segment(r, i)
		}
		rq.Encode(slot)
	}
	q.wrote(slot)
	r.produced = true
}

// push publishes the requests produced (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY)
// and reports whether the back end asked to be notified.
func (q *queue) push() bool {
	notify := q.front.PushRequests()
	q.wrote(q.ring[abi.RING_REQ_PROD : abi.RING_REQ_PROD+4])
	return notify
}

// finalCheck is RING_FINAL_CHECK_FOR_RESPONSES: false means rsp_event is
// set and the back end's next response notifies.
func (q *queue) finalCheck() (bool, error) {
	more, err := q.front.FinalCheckForResponses()
	q.wrote(q.ring[abi.RING_RSP_EVENT : abi.RING_RSP_EVENT+4])
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return more, nil
}

// pending reports whether responses wait to be consumed.
func (q *queue) pending() bool {
	n, err := q.front.PendingResponses()
	return n > 0 || err != nil
}

// responses consumes every response published and hands each answered
// request to done, its err set from the status. A response that breaks
// the protocol stops it with ErrProtocol; the requests answered before
// it have been handed over.
func (q *queue) responses(done func(*request)) error {
	for {
		slot, err := q.front.NextResponse()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if slot == nil {
			return nil
		}
		rsp, err := abi.DecodeBlkifResponse(slot) // a copy: the back end may still write the slot
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		r, err := q.match(rsp)
		if err != nil {
			return err
		}
		r.err = statusErr(rsp.Status)
		done(r)
	}
}

// match finds and frees the request a response answers.
func (q *queue) match(rsp abi.BlkifResponse) (*request, error) {
	slot := rsp.ID & 0xffff
	if slot >= uint64(len(q.reqs)) || q.reqs[slot] == nil || q.reqs[slot].id != rsp.ID || !q.reqs[slot].produced {
		return nil, fmt.Errorf("%w: a response for id %#x, a request it was not given", ErrProtocol, rsp.ID)
	}
	r := q.reqs[slot]
	// Linux's blkback answers an indirect request with its inner
	// operation; accept either.
	if rsp.Operation != r.op && !(len(r.indirect) > 0 && rsp.Operation == abi.BLKIF_OP_INDIRECT) {
		return nil, fmt.Errorf("%w: a response with operation %d to request %#x of operation %d", ErrProtocol, rsp.Operation, rsp.ID, r.op)
	}
	q.reqs[slot] = nil
	q.freeIDs = append(q.freeIDs, uint16(slot))
	q.busy--
	return r, nil
}

// statusErr maps a response's status to the request's outcome.
func statusErr(status int16) error {
	switch status {
	case abi.BLKIF_RSP_OKAY:
		return nil
	case abi.BLKIF_RSP_EOPNOTSUPP:
		return ErrNotSupported
	case abi.BLKIF_RSP_ERROR:
		return errIO
	}
	return fmt.Errorf("%w (status %d, which blkif.h does not define)", errIO, status)
}

// readOut copies a READ's data out of its pages; the back end has
// answered, so it no longer writes them. Runs without the lock.
func (q *queue) readOut(r *request) {
	if r.op != abi.BLKIF_OP_READ || r.err != nil {
		return
	}
	for i, pg := range r.pages {
		copy(r.buf[i*abi.PAGE_SIZE:], q.page(pg)[:min(r.n-i*abi.PAGE_SIZE, abi.PAGE_SIZE)])
	}
}

// release returns an answered request's pages to the pool.
func (q *queue) release(r *request) {
	q.freePages = append(q.freePages, r.pages...)
	q.freePages = append(q.freePages, r.indirect...)
	r.pages, r.indirect = nil, nil
}

// abandon takes every request reserved or in flight off the queue, for
// a disk that is failing. Their pages are not returned: a back end may
// still write them, and nothing is reserved again.
func (q *queue) abandon() []*request {
	var out []*request
	for i, r := range q.reqs {
		if r != nil {
			out = append(out, r)
			q.reqs[i] = nil
		}
	}
	q.freeIDs, q.busy = nil, 0
	return out
}

var errShortPool = errors.New("blkfront: the pool cannot hold one request")
