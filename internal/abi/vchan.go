package abi

import (
	"encoding/binary"
	"errors"
)

// struct vchan_interface, from io/libxenvchan.h: a 24-byte header at the
// start of the control page, then the grant refs of out-of-page rings.
// "left" is written by the client and read by the server; "right" the
// reverse.
const (
	VCHAN_LEFT_CONS   = 0
	VCHAN_LEFT_PROD   = 4
	VCHAN_RIGHT_CONS  = 8
	VCHAN_RIGHT_PROD  = 12
	VCHAN_LEFT_ORDER  = 16 // u16, log2 of the left ring's size
	VCHAN_RIGHT_ORDER = 18 // u16
	VCHAN_CLI_LIVE    = 20 // u8: 0 gone, 1 connected, 2 not yet connected
	VCHAN_SRV_LIVE    = 21 // u8: 0 gone, 1 alive
	VCHAN_CLI_NOTIFY  = 22 // u8: bits the server sets to ask the client to notify it
	VCHAN_SRV_NOTIFY  = 23 // u8: bits the client sets to ask the server to notify it
	VCHAN_GRANTS      = 24 // u32 grant refs: left ring's pages, then right's
	VCHAN_HEADER_SIZE = 24
)

// Notify request bits, from io/libxenvchan.h.
const (
	VCHAN_NOTIFY_WRITE = 1 // notify me when you write
	VCHAN_NOTIFY_READ  = 2 // notify me when you consume
)

// Ring orders libxenvchan accepts: 10 and 11 live in the control page (at
// offset 1024 and 2048), 12..20 in 2^(order-12) separately granted pages.
const (
	VCHAN_MIN_ORDER = 10
	VCHAN_MAX_ORDER = 20
)

// Live values of cli_live/srv_live.
const (
	VCHAN_LIVE_GONE    = 0
	VCHAN_LIVE_OK      = 1
	VCHAN_LIVE_WAITING = 2 // cli_live only: server waiting for the client
)

// VchanRing says where one direction's ring lives.
type VchanRing struct {
	Order uint16
	// InPage is the ring's offset inside the control page (orders 10, 11);
	// 0 for a paged ring.
	InPage int
	// Pages is how many granted pages a paged ring uses (0 if in-page).
	Pages int
}

// Size is the ring's byte size.
func (r VchanRing) Size() int { return 1 << r.Order }

// VchanLayout is the validated geometry of a vchan control page.
type VchanLayout struct {
	Left, Right VchanRing
	// LeftGrants and RightGrants are the rings' grant refs, read from the
	// control page (empty for in-page rings).
	LeftGrants, RightGrants []GrantRef
}

// ErrVchanLayout reports a control page whose orders or grant list
// libxenvchan would refuse.
var ErrVchanLayout = errors.New("abi: bad vchan ring layout")

func vchanRing(order uint16) (VchanRing, error) {
	switch {
	case order == 10:
		return VchanRing{Order: order, InPage: 1024}, nil
	case order == 11:
		return VchanRing{Order: order, InPage: 2048}, nil
	case order >= 12 && order <= VCHAN_MAX_ORDER:
		return VchanRing{Order: order, Pages: 1 << (order - 12)}, nil
	}
	return VchanRing{}, ErrVchanLayout
}

// DecodeVchanLayout reads the orders and grant refs from a control page
// written by the peer, rejecting what libxenvchan's client rejects: orders
// outside 10..20, two equal in-page orders, and a grant list that would
// run into an in-page ring or past the page.
func DecodeVchanLayout(page []byte) (VchanLayout, error) {
	if len(page) < PAGE_SIZE {
		return VchanLayout{}, errShort
	}
	le := binary.LittleEndian
	left, err := vchanRing(le.Uint16(page[VCHAN_LEFT_ORDER:]))
	if err != nil {
		return VchanLayout{}, err
	}
	right, err := vchanRing(le.Uint16(page[VCHAN_RIGHT_ORDER:]))
	if err != nil {
		return VchanLayout{}, err
	}
	if left.InPage != 0 && left.InPage == right.InPage {
		return VchanLayout{}, ErrVchanLayout
	}
	// The grant list must end before the first in-page ring.
	limit := PAGE_SIZE
	for _, r := range []VchanRing{left, right} {
		if r.InPage != 0 && r.InPage < limit {
			limit = r.InPage
		}
	}
	n := left.Pages + right.Pages
	if VCHAN_GRANTS+4*n > limit {
		return VchanLayout{}, ErrVchanLayout
	}
	refs := make([]GrantRef, n)
	for i := range refs {
		refs[i] = GrantRef(le.Uint32(page[VCHAN_GRANTS+4*i:]))
	}
	return VchanLayout{
		Left: left, Right: right,
		LeftGrants:  refs[:left.Pages:left.Pages],
		RightGrants: refs[left.Pages:],
	}, nil
}
