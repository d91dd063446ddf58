package blkback

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	gring "shi/guest/ring"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/devices/blkif/toolstack"
)

// rawFront is a front end written by hand, to send what guest/blkfront
// never would: it shares a one-page ring and some data pages, without
// persistent grants, and speaks the ring directly.
type rawFront struct {
	t     *testing.T
	ring  *gring.Front
	evt   *evtchn.Handle
	data  *gnttab.Share
	other *gnttab.Share // granted to a domain that is not the back end
	seq   uint64
}

func newRawFront(t *testing.T, r *rig, fe uint32, dev string) *rawFront {
	t.Helper()
	hvc := r.dom(t, abi.DomID(fe), false)
	r.dom(t, abi.DomID(fe+1), false)
	xc := r.client(t, fe)
	devid, _ := blkif.DevID(dev)
	fp, bp := blkif.FrontPath(fe, devid), blkif.BackendPath(driver, fe, devid)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := blkif.WaitState(ctx, xc, bp, blkif.StateIs(blkif.StateInitWait)); err != nil {
		t.Fatal(err)
	}
	evt, err := evtchn.Open(hvc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { evt.Close() })
	port, err := evt.AllocUnbound(driver)
	if err != nil {
		t.Fatal(err)
	}
	g := gnttab.Open(hvc)
	rs, err := g.SharePages(driver, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gring.NewFront(rs.Bytes(), abi.BlkifRequestSize, evt, port)
	if err != nil {
		t.Fatal(err)
	}
	data, err := g.SharePages(driver, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	other, err := g.SharePages(abi.DomID(fe+1), 1, true)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"ring-ref": strconv.Itoa(int(rs.Refs[0])), "event-channel": strconv.Itoa(int(port))} {
		if err := xc.Write(fp+"/"+k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := blkif.WriteState(xc, fp, blkif.StateInitialised); err != nil {
		t.Fatal(err)
	}
	if _, err := blkif.WaitState(ctx, xc, bp, blkif.StateIs(blkif.StateConnected)); err != nil {
		t.Fatal(err)
	}
	return &rawFront{t: t, ring: f, evt: evt, data: data, other: other}
}

// do sends one 112-byte entry (its id replaced by a fresh one) and
// returns the response's status.
func (f *rawFront) do(entry []byte) int16 {
	f.t.Helper()
	f.seq++
	id := f.seq
	binary.LittleEndian.PutUint64(entry[8:], id)
	slot := f.ring.NextRequest()
	copy(slot, entry)
	if err := f.ring.Push(); err != nil {
		f.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := f.ring.WaitResponses(deadline); err != nil {
			f.t.Fatalf("waiting for the response to request %d: %v", id, err)
		}
		rsp, err := f.ring.NextResponse()
		if err != nil {
			f.t.Fatal(err)
		}
		if rsp == nil {
			continue
		}
		r, _ := abi.DecodeBlkifResponse(rsp)
		if r.ID != id || r.Operation != entry[0] {
			f.t.Fatalf("response %+v to request %d op %d", r, id, entry[0])
		}
		return r.Status
	}
}

// TestHostileRequests sends malformed requests through the ring: each
// gets an error response, and the disk keeps working.
func TestHostileRequests(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "h.img", 1<<20)
	const fe = 20
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	f := newRawFront(t, r, fe, "xvda")
	good := f.data.Refs[0]
	ok := func(name string, st int16, want int16) {
		t.Helper()
		if st != want {
			t.Errorf("%s: status %d, want %d", name, st, want)
		}
	}
	copy(f.data.Bytes(), bytes.Repeat([]byte("blk!"), 1024))
	ok("write", f.do(rw(abi.BLKIF_OP_WRITE, 8, seg(uint32(good), 0, 7))), abi.BLKIF_RSP_OKAY)
	clear(f.data.Bytes()[abi.PAGE_SIZE:])
	ok("read", f.do(rw(abi.BLKIF_OP_READ, 8, seg(uint32(f.data.Refs[1]), 0, 7))), abi.BLKIF_RSP_OKAY)
	f.evt.Acquire()
	if !bytes.Equal(f.data.Bytes()[abi.PAGE_SIZE:2*abi.PAGE_SIZE], f.data.Bytes()[:abi.PAGE_SIZE]) {
		t.Fatal("the read did not bring back what was written")
	}
	ok("not granted", f.do(rw(abi.BLKIF_OP_READ, 0, seg(999, 0, 7))), abi.BLKIF_RSP_ERROR)
	ok("granted to another", f.do(rw(abi.BLKIF_OP_READ, 0, seg(uint32(f.other.Refs[0]), 0, 7))), abi.BLKIF_RSP_ERROR)
	ok("past the end", f.do(rw(abi.BLKIF_OP_WRITE, 2047, seg(uint32(good), 0, 1))), abi.BLKIF_RSP_ERROR)
	ok("last before first", f.do(rw(abi.BLKIF_OP_READ, 0, seg(uint32(good), 5, 2))), abi.BLKIF_RSP_ERROR)
	ok("last past the page", f.do(rw(abi.BLKIF_OP_READ, 0, seg(uint32(good), 0, 9))), abi.BLKIF_RSP_ERROR)
	ok("no segments", f.do(rw(abi.BLKIF_OP_WRITE, 0)), abi.BLKIF_RSP_ERROR)
	twelve := rw(abi.BLKIF_OP_READ, 0, seg(uint32(good), 0, 0))
	twelve[1] = 12
	ok("twelve segments", f.do(twelve), abi.BLKIF_RSP_ERROR)
	ok("barrier", f.do(rw(abi.BLKIF_OP_WRITE_BARRIER, 0)), abi.BLKIF_RSP_EOPNOTSUPP)
	ok("unknown op", f.do(rw(77, 0)), abi.BLKIF_RSP_ERROR)
	ok("flush", f.do(rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 0)), abi.BLKIF_RSP_OKAY)

	ind := func(n uint16, refs ...abi.GrantRef) []byte {
		req := abi.BlkifRequestIndirect{Operation: abi.BLKIF_OP_INDIRECT, IndirectOp: abi.BLKIF_OP_READ, NrSegments: n}
		copy(req.IndirectGrefs[:], refs)
		b := make([]byte, abi.BlkifRequestSize)
		req.Encode(b)
		return b
	}
	desc := f.data.Bytes()[3*abi.PAGE_SIZE:]
	seg(uint32(f.data.Refs[1]), 0, 7).Encode(desc)
	seg(uint32(f.data.Refs[2]), 0, 7).Encode(desc[8:])
	ok("indirect", f.do(ind(2, f.data.Refs[3])), abi.BLKIF_RSP_OKAY)
	ok("indirect, no segments", f.do(ind(0, f.data.Refs[3])), abi.BLKIF_RSP_ERROR)
	ok("indirect, too many", f.do(ind(MaxIndirectSegments+1, f.data.Refs[3])), abi.BLKIF_RSP_ERROR)
	ok("indirect page not granted", f.do(ind(2, 999)), abi.BLKIF_RSP_ERROR)
	seg(999, 0, 7).Encode(desc[8:])
	ok("indirect segment not granted", f.do(ind(2, f.data.Refs[3])), abi.BLKIF_RSP_ERROR)
	seg(uint32(f.data.Refs[2]), 7, 0).Encode(desc[8:])
	ok("indirect segment backwards", f.do(ind(2, f.data.Refs[3])), abi.BLKIF_RSP_ERROR)

	// Garbage: every entry gets a response with its id, and the back end
	// stays up.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		e := make([]byte, abi.BlkifRequestSize)
		for i := range e {
			e[i] = byte(rng.Uint32())
		}
		e[0] %= 8
		f.do(e)
	}
	ok("read after garbage", f.do(rw(abi.BLKIF_OP_READ, 8, seg(uint32(good), 0, 7))), abi.BLKIF_RSP_OKAY)
	if st := r.backState(fe, "xvda"); st != "4" {
		t.Fatalf("back end state %s after hostile requests", st)
	}
}

// TestHostileReadOnly: a write to a mode r disk, sent anyway, is refused.
func TestHostileReadOnly(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "hro.img", 1<<20)
	const fe = 30
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvda", Path: img})
	f := newRawFront(t, r, fe, "xvda")
	copy(f.data.Bytes(), bytes.Repeat([]byte{0xee}, abi.PAGE_SIZE))
	g := uint32(f.data.Refs[0])
	if st := f.do(rw(abi.BLKIF_OP_WRITE, 0, seg(g, 0, 7))); st != abi.BLKIF_RSP_ERROR {
		t.Fatalf("write: status %d", st)
	}
	if st := f.do(rw(abi.BLKIF_OP_FLUSH_DISKCACHE, 0, seg(g, 0, 7))); st != abi.BLKIF_RSP_ERROR {
		t.Fatalf("flush with data: status %d", st)
	}
	d := abi.BlkifRequestDiscard{Operation: abi.BLKIF_OP_DISCARD, NrSectors: 8}
	b := make([]byte, abi.BlkifRequestSize)
	d.Encode(b)
	if st := f.do(b); st == abi.BLKIF_RSP_OKAY {
		t.Fatal("discard on a read-only disk succeeded")
	}
	if st := f.do(rw(abi.BLKIF_OP_READ, 0, seg(g, 0, 7))); st != abi.BLKIF_RSP_OKAY {
		t.Fatalf("read: status %d", st)
	}
	f.evt.Acquire()
	if !bytes.Equal(f.data.Bytes()[:abi.PAGE_SIZE], make([]byte, abi.PAGE_SIZE)) {
		t.Fatal("the refused write reached the disk")
	}
}
