package vchan

import (
	"encoding/binary"
	"errors"
	"fmt"

	"shi/internal/abi"
)

// Ring sizes, from libxenvchan's init.c.
const (
	smallOrder = 10 // in the control page at 1024
	largeOrder = 11 // in the control page at 2048
	pageOrder  = 12
	// MaxRing is the largest ring libxenvchan makes (more pages would
	// not fit their grant refs in the control page).
	MaxRing = 1 << abi.VCHAN_MAX_ORDER
)

// ErrLayout means a control page the client must not use: orders or a
// grant list libxenvchan's client rejects, indices claiming more than a
// ring holds, or live bytes of a server that is not waiting for a client.
var ErrLayout = errors.New("vchan: bad control page")

// minOrder is the smallest paged order whose ring holds size bytes.
func minOrder(size int) uint16 {
	o := uint16(pageOrder)
	for size > 1<<o {
		o++
	}
	return o
}

// Orders is libxenvchan_server_init's choice of ring orders for a server
// that wants at least readMin bytes in the left ring (the client writes,
// the server reads) and writeMin in the right one: both rings inside the
// control page when they fit (1024 and 2048 bytes, either way round),
// else the one that fits at 2048 in the page and the other in pages of
// its own, else both paged, each the smallest power of two of at least
// a page that holds its minimum.
func Orders(readMin, writeMin int) (left, right uint16, err error) {
	if readMin < 0 || writeMin < 0 || readMin > MaxRing || writeMin > MaxRing {
		return 0, 0, fmt.Errorf("vchan: ring minimums %d/%d: at most %d bytes", readMin, writeMin, MaxRing)
	}
	left, right = minOrder(readMin), minOrder(writeMin)
	const small, large = 1 << smallOrder, 1 << largeOrder
	switch {
	case readMin <= small && writeMin <= large:
		left, right = smallOrder, largeOrder
	case readMin <= large && writeMin <= small:
		left, right = largeOrder, smallOrder
	case readMin <= large:
		left = largeOrder
	case writeMin <= large:
		right = largeOrder
	}
	return left, right, nil
}

// CheckOrders reports whether the client accepts a pair of orders: each
// in 10..20, not the same in-page slot twice, and the grant refs of the
// paged rings inside the control page, clear of the in-page rings (so
// 20/10 is refused: 256 refs would run into the ring at 1024).
func CheckOrders(left, right uint16) error {
	for _, o := range []uint16{left, right} {
		if o < abi.VCHAN_MIN_ORDER || o > abi.VCHAN_MAX_ORDER {
			return fmt.Errorf("%w: ring order %d outside %d..%d", ErrLayout, o, abi.VCHAN_MIN_ORDER, abi.VCHAN_MAX_ORDER)
		}
	}
	if left == right && left < pageOrder {
		return fmt.Errorf("%w: both rings at order %d in the control page", ErrLayout, left)
	}
	limit := abi.PAGE_SIZE
	for _, o := range []uint16{left, right} {
		if off := inPage(o); off != 0 {
			limit = min(limit, off)
		}
	}
	if n := pages(left) + pages(right); abi.VCHAN_GRANTS+4*n > limit {
		return fmt.Errorf("%w: %d grant refs for orders %d/%d run past byte %d", ErrLayout, n, left, right, limit)
	}
	return nil
}

// pages is how many granted pages a ring of this order takes (0 if it
// lives in the control page).
func pages(order uint16) int {
	if order < pageOrder {
		return 0
	}
	return 1 << (order - pageOrder)
}

// inPage is where an in-page ring of this order lives in the control
// page (0 for a paged ring).
func inPage(order uint16) int {
	switch order {
	case smallOrder:
		return 1024
	case largeOrder:
		return 2048
	}
	return 0
}

// initPage writes a fresh server control page (init_gnt_srv): zeroed,
// the orders, the client not yet connected, the server alive, and the
// client asked to notify on its first write. The grant refs follow.
func initPage(page []byte, left, right uint16, refs []abi.GrantRef) {
	clear(page[:abi.PAGE_SIZE])
	le := binary.LittleEndian
	le.PutUint16(page[abi.VCHAN_LEFT_ORDER:], left)
	le.PutUint16(page[abi.VCHAN_RIGHT_ORDER:], right)
	page[abi.VCHAN_CLI_LIVE] = abi.VCHAN_LIVE_WAITING
	page[abi.VCHAN_SRV_LIVE] = abi.VCHAN_LIVE_OK
	page[abi.VCHAN_CLI_NOTIFY] = abi.VCHAN_NOTIFY_WRITE
	for i, r := range refs {
		le.PutUint32(page[abi.VCHAN_GRANTS+4*i:], uint32(r))
	}
}

// DecodePage validates a control page a server wrote, as a client finds
// it on connecting, and returns its geometry: the orders as
// libxenvchan's client checks them, the grant list inside the page and
// clear of the in-page rings, both rings' indices consistent (the
// server may already have written, never more than its ring holds), and
// a live server waiting for its first client.
func DecodePage(page []byte) (abi.VchanLayout, error) {
	if len(page) < abi.PAGE_SIZE {
		return abi.VchanLayout{}, fmt.Errorf("%w: %d bytes, not a page", ErrLayout, len(page))
	}
	le := binary.LittleEndian
	left, right := le.Uint16(page[abi.VCHAN_LEFT_ORDER:]), le.Uint16(page[abi.VCHAN_RIGHT_ORDER:])
	if err := CheckOrders(left, right); err != nil {
		return abi.VchanLayout{}, err
	}
	l, err := abi.DecodeVchanLayout(page)
	if err != nil { // CheckOrders has made sure it cannot
		return abi.VchanLayout{}, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	for _, r := range []struct {
		name       string
		cons, prod int
		size       int
	}{
		{"left", abi.VCHAN_LEFT_CONS, abi.VCHAN_LEFT_PROD, l.Left.Size()},
		{"right", abi.VCHAN_RIGHT_CONS, abi.VCHAN_RIGHT_PROD, l.Right.Size()},
	} {
		cons, prod := le.Uint32(page[r.cons:]), le.Uint32(page[r.prod:])
		if used := prod - cons; used > uint32(r.size) {
			return abi.VchanLayout{}, fmt.Errorf("%w: %s ring holds %d bytes of %d (cons %d, prod %d)", ErrLayout, r.name, used, r.size, cons, prod)
		}
	}
	if v := page[abi.VCHAN_SRV_LIVE]; v != abi.VCHAN_LIVE_OK {
		return abi.VchanLayout{}, fmt.Errorf("%w: srv_live is %d: the server is gone", ErrLayout, v)
	}
	if v := page[abi.VCHAN_CLI_LIVE]; v != abi.VCHAN_LIVE_WAITING {
		return abi.VchanLayout{}, fmt.Errorf("%w: cli_live is %d: the server is not waiting for a client (one client per vchan)", ErrLayout, v)
	}
	return l, nil
}
