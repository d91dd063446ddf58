package vchan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"shi/internal/abi"
	"shi/internal/ring"
)

// The control page's header is struct vchan_interface of
// io/libxenvchan.h byte for byte.
func TestPageOffsets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want int
	}{
		{"left.cons", abi.VCHAN_LEFT_CONS, 0}, {"left.prod", abi.VCHAN_LEFT_PROD, 4},
		{"right.cons", abi.VCHAN_RIGHT_CONS, 8}, {"right.prod", abi.VCHAN_RIGHT_PROD, 12},
		{"left_order", abi.VCHAN_LEFT_ORDER, 16}, {"right_order", abi.VCHAN_RIGHT_ORDER, 18},
		{"cli_live", abi.VCHAN_CLI_LIVE, 20}, {"srv_live", abi.VCHAN_SRV_LIVE, 21},
		{"cli_notify", abi.VCHAN_CLI_NOTIFY, 22}, {"srv_notify", abi.VCHAN_SRV_NOTIFY, 23},
		{"grants", abi.VCHAN_GRANTS, 24},
		{"NOTIFY_WRITE", abi.VCHAN_NOTIFY_WRITE, 1}, {"NOTIFY_READ", abi.VCHAN_NOTIFY_READ, 2},
		{"order 10 ring", inPage(10), 1024}, {"order 11 ring", inPage(11), 2048},
	} {
		if tc.got != tc.want {
			t.Errorf("%s at %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	refs := []abi.GrantRef{0x11223344, 0x55667788}
	p := make([]byte, abi.PAGE_SIZE)
	for i := range p {
		p[i] = 0xee // initPage zeroes the page first
	}
	initPage(p, 13, 11, refs)
	want := []byte{
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // indices
		13, 0, 11, 0, // orders, little-endian u16
		2, 1, 1, 0, // cli_live waiting, srv_live, cli_notify = WRITE, srv_notify
		0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, // grants[]
	}
	if got := p[:len(want)]; string(got) != string(want) {
		t.Fatalf("header\n got % x\nwant % x", got, want)
	}
	for i, b := range p[len(want):] {
		if b != 0 {
			t.Fatalf("byte %d is %#x after init", len(want)+i, b)
		}
	}
}

// Every branch of libxenvchan_server_init's choice (spec §7.2).
func TestOrders(t *testing.T) {
	for _, tc := range []struct {
		read, write int
		left, right uint16
	}{
		// Both in the page: left 1024 at 1024, right 2048 at 2048.
		{0, 0, 10, 11}, {1, 1, 10, 11}, {1024, 2048, 10, 11}, {1024, 1024, 10, 11},
		// The other way round.
		{2048, 0, 11, 10}, {1025, 1024, 11, 10}, {2048, 1024, 11, 10},
		// Left in the page at 2048, right paged.
		{2048, 2048, 11, 12}, {1025, 1025, 11, 12}, {0, 2049, 11, 12}, {1024, 4096, 11, 12},
		{0, 4097, 11, 13}, {0, 1 << 20, 11, 20}, {2048, 65536, 11, 16},
		// Right in the page at 2048, left paged.
		{2049, 0, 12, 11}, {4096, 2048, 12, 11}, {3000, 1500, 12, 11}, {1 << 20, 2048, 20, 11},
		{8193, 1024, 14, 11},
		// Both paged: the smallest order of at least a page that holds
		// the minimum.
		{4096, 4096, 12, 12}, {2049, 2049, 12, 12}, {4097, 8192, 13, 13}, {5000, 65536, 13, 16},
		{1 << 20, 1 << 20, 20, 20}, {1<<19 + 1, 3000, 20, 12},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.read, tc.write), func(t *testing.T) {
			l, r, err := Orders(tc.read, tc.write)
			if err != nil || l != tc.left || r != tc.right {
				t.Fatalf("Orders = %d/%d %v, want %d/%d", l, r, err, tc.left, tc.right)
			}
			if err := CheckOrders(l, r); err != nil {
				t.Fatalf("the client refuses what the server chose: %v", err)
			}
		})
	}
	for _, bad := range [][2]int{{1<<20 + 1, 0}, {0, 1<<20 + 1}, {-1, 0}} {
		if l, r, err := Orders(bad[0], bad[1]); err == nil {
			t.Errorf("Orders(%d, %d) = %d/%d, want an error", bad[0], bad[1], l, r)
		}
	}
}

// cOrders is init.c's code, transcribed as it is, for the comparison
// below.
func cOrders(leftMin, rightMin int) (uint16, uint16) {
	minOrder := func(siz int) uint16 {
		rv := uint16(12)
		for siz > 1<<rv {
			rv++
		}
		return rv
	}
	read, write := minOrder(leftMin), minOrder(rightMin)
	if leftMin <= 1024 && rightMin <= 2048 {
		read, write = 10, 11
	} else if leftMin <= 2048 && rightMin <= 1024 {
		read, write = 11, 10
	} else if leftMin <= 2048 {
		read = 11
	} else if rightMin <= 2048 {
		write = 11
	}
	return read, write
}

func TestOrdersMatchC(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := func() int {
		switch rng.IntN(3) {
		case 0:
			return rng.IntN(5000)
		case 1:
			return 1 << rng.IntN(21)
		}
		return rng.IntN(1<<20 + 1)
	}
	for range 50000 {
		r, w := sizes(), sizes()
		l, rr, err := Orders(r, w)
		cl, cr := cOrders(r, w)
		if err != nil || l != cl || rr != cr {
			t.Fatalf("Orders(%d, %d) = %d/%d %v; init.c picks %d/%d", r, w, l, rr, err, cl, cr)
		}
		if 1<<l < r || 1<<rr < w {
			t.Fatalf("Orders(%d, %d) = %d/%d: too small", r, w, l, rr)
		}
	}
}

func TestCheckOrders(t *testing.T) {
	ok := [][2]uint16{{10, 11}, {11, 10}, {10, 12}, {12, 10}, {19, 10}, {10, 19}, {11, 20}, {20, 11}, {12, 12}, {20, 20}, {12, 20}, {16, 16}}
	bad := [][2]uint16{{10, 10}, {11, 11}, {9, 11}, {21, 12}, {0, 0}, {20, 10}, {10, 20}, {12, 65535}}
	for _, o := range ok {
		if err := CheckOrders(o[0], o[1]); err != nil {
			t.Errorf("%d/%d: %v", o[0], o[1], err)
		}
	}
	for _, o := range bad {
		if err := CheckOrders(o[0], o[1]); !errors.Is(err, ErrLayout) {
			t.Errorf("%d/%d accepted (%v)", o[0], o[1], err)
		}
	}
}

// serverPage is a page as a fresh server leaves it, refs numbered from
// 100.
func serverPage(left, right uint16) []byte {
	var refs []abi.GrantRef
	for i := range pages(left) + pages(right) {
		refs = append(refs, abi.GrantRef(100+i))
	}
	p := ring.AlignedBytes(abi.PAGE_SIZE)
	initPage(p, left, right, refs)
	return p
}

func TestDecodePage(t *testing.T) {
	// Every pair the client accepts decodes to what the server wrote.
	for l := uint16(10); l <= 20; l++ {
		for r := uint16(10); r <= 20; r++ {
			if CheckOrders(l, r) != nil {
				continue
			}
			got, err := DecodePage(serverPage(l, r))
			if err != nil {
				t.Fatalf("%d/%d: %v", l, r, err)
			}
			if got.Left.Order != l || got.Right.Order != r || len(got.LeftGrants) != pages(l) || len(got.RightGrants) != pages(r) {
				t.Fatalf("%d/%d decoded as %+v", l, r, got)
			}
			if pages(l) > 0 && got.LeftGrants[0] != 100 || pages(r) > 0 && got.RightGrants[0] != abi.GrantRef(100+pages(l)) {
				t.Fatalf("%d/%d: refs %v %v", l, r, got.LeftGrants[:1], got.RightGrants[:1])
			}
		}
	}
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		mod  func(p []byte)
	}{
		{"order 9", func(p []byte) { le.PutUint16(p[16:], 9) }},
		{"order 21", func(p []byte) { le.PutUint16(p[18:], 21) }},
		{"both 1024 in the page", func(p []byte) { le.PutUint16(p[16:], 10); le.PutUint16(p[18:], 10) }},
		{"both 2048 in the page", func(p []byte) { le.PutUint16(p[16:], 11); le.PutUint16(p[18:], 11) }},
		{"grants into the ring at 1024", func(p []byte) { le.PutUint16(p[16:], 20); le.PutUint16(p[18:], 10) }},
		{"left holds more than its ring", func(p []byte) { le.PutUint32(p[4:], 1025) }},
		{"right holds more than its ring", func(p []byte) { le.PutUint32(p[8:], 5); le.PutUint32(p[12:], 4) }},
		{"server gone", func(p []byte) { p[21] = 0 }},
		{"client already connected", func(p []byte) { p[20] = 1 }},
		{"client gone", func(p []byte) { p[20] = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serverPage(10, 11)
			tc.mod(p)
			if l, err := DecodePage(p); !errors.Is(err, ErrLayout) {
				t.Fatalf("decoded %+v, %v", l, err)
			}
		})
	}
	// Indices the server has written before its client came, and that
	// wrapped around 2^32, are fine.
	p := serverPage(10, 11)
	le.PutUint32(p[8:], 0xffffff00)
	le.PutUint32(p[12:], 0x00000700) // 2048 bytes in the 2048-byte ring
	if _, err := DecodePage(p); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodePage(p[:100]); !errors.Is(err, ErrLayout) {
		t.Fatal("a short page decoded")
	}
}

// FuzzDecodePage: whatever a server writes, the client errs cleanly or
// gets a geometry it can use without touching memory outside the page
// or its grants.
func FuzzDecodePage(f *testing.F) {
	for _, o := range [][2]uint16{{10, 11}, {11, 10}, {12, 20}, {20, 20}, {19, 10}} {
		f.Add(serverPage(o[0], o[1])[:64])
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		p := serverPage(12, 12)
		copy(p, head)
		l, err := DecodePage(p)
		if err != nil {
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("error %v is not ErrLayout", err)
			}
			return
		}
		if CheckOrders(l.Left.Order, l.Right.Order) != nil {
			t.Fatalf("accepted orders %d/%d", l.Left.Order, l.Right.Order)
		}
		for _, r := range []abi.VchanRing{l.Left, l.Right} {
			if r.InPage != 0 && (r.InPage < abi.VCHAN_GRANTS+4*(len(l.LeftGrants)+len(l.RightGrants)) || r.InPage+r.Size() > abi.PAGE_SIZE) {
				t.Fatalf("in-page ring at %d (size %d) overlaps the grants or the page end", r.InPage, r.Size())
			}
		}
		if len(l.LeftGrants) != pages(l.Left.Order) || len(l.RightGrants) != pages(l.Right.Order) {
			t.Fatalf("grants %d/%d for orders %d/%d", len(l.LeftGrants), len(l.RightGrants), l.Left.Order, l.Right.Order)
		}
		// The rings it describes work: the streams accept the indices.
		for _, s := range []struct {
			size, cons, prod int
		}{{l.Left.Size(), 0, 4}, {l.Right.Size(), 8, 12}} {
			st, err := ring.NewStream(make([]byte, s.size), p, s.cons, s.prod)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Readable(); err != nil {
				t.Fatalf("accepted page has corrupt indices: %v", err)
			}
		}
	})
}
