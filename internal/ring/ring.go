package ring

import (
	"errors"
	"math/bits"

	"shi/internal/abi"
)

var (
	// ErrOverflow means the peer published an index that claims more
	// entries than the ring can hold or than were asked for: a misbehaving
	// peer. The ring is unusable until it is reset.
	ErrOverflow = errors.New("ring: peer index overflows the ring")
	// ErrGeometry means the shared area cannot hold a ring of that entry
	// size, or is not 4-byte aligned.
	ErrGeometry = errors.New("ring: bad ring geometry")
)

// Entries is __CONST_RING_SIZE: how many entries of entrySize bytes fit in a
// shared area of size bytes after the header, rounded down to a power of
// two; 0 if none fit.
func Entries(size, entrySize int) int {
	if entrySize <= 0 || size < abi.RING_HEADER_SIZE+entrySize {
		return 0
	}
	n := (size - abi.RING_HEADER_SIZE) / entrySize
	return 1 << (bits.Len(uint(n)) - 1)
}

// Init is SHARED_RING_INIT: the front end zeroes the header and sets both
// event indices to 1 before advertising the ring.
func Init(shared []byte) {
	clear(shared[:abi.RING_HEADER_SIZE])
	Store32(shared, abi.RING_REQ_EVENT, 1)
	Store32(shared, abi.RING_RSP_EVENT, 1)
}

// geometry is what both ends share: the page and its slot layout.
type geometry struct {
	sh    []byte
	n     uint32 // entries, a power of two
	esize int
}

func newGeometry(shared []byte, entrySize int) (geometry, error) {
	n := Entries(len(shared), entrySize)
	if n == 0 || !Aligned(shared) {
		return geometry{}, ErrGeometry
	}
	return geometry{sh: shared, n: uint32(n), esize: entrySize}, nil
}

// slot is RING_GET_REQUEST/RING_GET_RESPONSE: the entry for a free-running
// index.
func (g *geometry) slot(idx uint32) []byte {
	o := abi.RING_HEADER_SIZE + int(idx&(g.n-1))*g.esize
	return g.sh[o : o+g.esize : o+g.esize]
}

// Size is RING_SIZE: the number of entries.
func (g *geometry) Size() uint32 { return g.n }

// push publishes a producer index and reports whether the peer asked to be
// notified (RING_PUSH_*_AND_CHECK_NOTIFY): true iff the peer's event index
// lies in (old, new].
func (g *geometry) push(prodOff, eventOff int, old, new uint32) bool {
	Store32(g.sh, prodOff, new)
	// Go atomics are sequentially consistent: the store above is the full
	// barrier io/ring.h requires before reading the event index.
	event := Load32(g.sh, eventOff)
	return new-event < new-old
}

// Front is the front end (request producer, response consumer) of an
// io/ring.h ring. It is not safe for concurrent use.
type Front struct {
	geometry
	reqProdPvt uint32 // requests produced locally
	reqPushed  uint32 // requests published in req_prod
	rspCons    uint32 // responses consumed
}

// NewFront attaches a front end at index 0 (FRONT_RING_INIT). The shared
// area must have been set up with Init.
func NewFront(shared []byte, entrySize int) (*Front, error) {
	g, err := newGeometry(shared, entrySize)
	if err != nil {
		return nil, err
	}
	return &Front{geometry: g}, nil
}

// Free is RING_FREE_REQUESTS: request slots not yet in use.
func (f *Front) Free() uint32 { return f.n - (f.reqProdPvt - f.rspCons) }

// Full is RING_FULL.
func (f *Front) Full() bool { return f.Free() == 0 }

// NextRequest returns the next free request slot and counts it as
// produced, or nil if the ring is full. Fill it, then PushRequests.
func (f *Front) NextRequest() []byte {
	if f.Full() {
		return nil
	}
	s := f.slot(f.reqProdPvt)
	f.reqProdPvt++
	return s
}

// PushRequests publishes the requests produced so far and reports whether
// the back end must be notified.
func (f *Front) PushRequests() (notify bool) {
	old := f.reqPushed
	f.reqPushed = f.reqProdPvt
	return f.push(abi.RING_REQ_PROD, abi.RING_REQ_EVENT, old, f.reqPushed)
}

// PendingResponses is RING_HAS_UNCONSUMED_RESPONSES. A back end that
// answers more requests than were pushed gets ErrOverflow.
func (f *Front) PendingResponses() (uint32, error) {
	d := Load32(f.sh, abi.RING_RSP_PROD) - f.rspCons
	if d > f.reqPushed-f.rspCons {
		return 0, ErrOverflow
	}
	return d, nil
}

// NextResponse returns the next unconsumed response slot and consumes it,
// or nil if there is none. The slot is shared memory: copy what you check.
func (f *Front) NextResponse() ([]byte, error) {
	n, err := f.PendingResponses()
	if n == 0 {
		return nil, err
	}
	s := f.slot(f.rspCons)
	f.rspCons++
	return s, nil
}

// FinalCheckForResponses is RING_FINAL_CHECK_FOR_RESPONSES: call it before
// sleeping. If it reports no work, rsp_event has been set so that the back
// end's next push notifies.
func (f *Front) FinalCheckForResponses() (bool, error) {
	if n, err := f.PendingResponses(); n > 0 || err != nil {
		return n > 0, err
	}
	Store32(f.sh, abi.RING_RSP_EVENT, f.rspCons+1)
	n, err := f.PendingResponses()
	return n > 0, err
}

// Back is the back end (request consumer, response producer) of an
// io/ring.h ring. It is not safe for concurrent use.
type Back struct {
	geometry
	rspProdPvt uint32 // responses produced locally
	rspPushed  uint32 // responses published in rsp_prod
	reqCons    uint32 // requests consumed
}

// NewBack attaches a back end at index 0 (BACK_RING_INIT).
func NewBack(shared []byte, entrySize int) (*Back, error) {
	g, err := newGeometry(shared, entrySize)
	if err != nil {
		return nil, err
	}
	return &Back{geometry: g}, nil
}

// PendingRequests is RING_HAS_UNCONSUMED_REQUESTS: requests published and
// not yet consumed. A front end whose req_prod runs more than a ring ahead
// of our responses (RING_REQUEST_PROD_OVERFLOW) gets ErrOverflow.
func (b *Back) PendingRequests() (uint32, error) {
	prod := Load32(b.sh, abi.RING_REQ_PROD)
	// Also refuse a req_prod that moved behind req_cons, which io/ring.h
	// would read as up to a ring's worth of stale requests.
	if prod-b.rspProdPvt > b.n || prod-b.reqCons > prod-b.rspProdPvt {
		return 0, ErrOverflow
	}
	return min(prod-b.reqCons, b.n-(b.reqCons-b.rspProdPvt)), nil
}

// NextRequest returns the next unconsumed request slot and consumes it, or
// nil if there is none. The front end can still write the slot: copy the
// request out before validating it.
func (b *Back) NextRequest() ([]byte, error) {
	n, err := b.PendingRequests()
	if n == 0 {
		return nil, err
	}
	s := b.slot(b.reqCons)
	b.reqCons++
	return s, nil
}

// NextResponse returns the slot for the next response, or nil if every
// consumed request has been answered. Fill it, then PushResponses.
func (b *Back) NextResponse() []byte {
	if b.rspProdPvt == b.reqCons {
		return nil
	}
	s := b.slot(b.rspProdPvt)
	b.rspProdPvt++
	return s
}

// PushResponses publishes the responses produced so far and reports
// whether the front end must be notified.
func (b *Back) PushResponses() (notify bool) {
	old := b.rspPushed
	b.rspPushed = b.rspProdPvt
	return b.push(abi.RING_RSP_PROD, abi.RING_RSP_EVENT, old, b.rspPushed)
}

// FinalCheckForRequests is RING_FINAL_CHECK_FOR_REQUESTS: call it before
// sleeping. If it reports no work, req_event has been set so that the
// front end's next push notifies.
func (b *Back) FinalCheckForRequests() (bool, error) {
	if n, err := b.PendingRequests(); n > 0 || err != nil {
		return n > 0, err
	}
	Store32(b.sh, abi.RING_REQ_EVENT, b.reqCons+1)
	n, err := b.PendingRequests()
	return n > 0, err
}
