package ring

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"shi/internal/abi"
)

func TestEntries(t *testing.T) {
	for _, tc := range []struct{ size, esize, want int }{
		{4096, abi.BlkifRequestSize, 32},
		{2 * 4096, abi.BlkifRequestSize, 64},
		{4 * 4096, abi.BlkifRequestSize, 128},
		{8 * 4096, abi.BlkifRequestSize, 256},
		{16 * 4096, abi.BlkifRequestSize, 512},
		{4096, 8, 256}, // 504 -> 256
		{4096, 4032, 1},
		{4096, 4033, 0},
		{64, 1, 0},
		{4096, 0, 0},
	} {
		if got := Entries(tc.size, tc.esize); got != tc.want {
			t.Errorf("Entries(%d, %d) = %d, want %d", tc.size, tc.esize, got, tc.want)
		}
	}
}

func TestInit(t *testing.T) {
	sh := AlignedBytes(4096)
	for i := range sh {
		sh[i] = 0xee
	}
	Init(sh)
	for _, f := range []struct {
		off  int
		want uint32
	}{{abi.RING_REQ_PROD, 0}, {abi.RING_REQ_EVENT, 1}, {abi.RING_RSP_PROD, 0}, {abi.RING_RSP_EVENT, 1}, {abi.RING_PVT, 0}} {
		if got := binary.LittleEndian.Uint32(sh[f.off:]); got != f.want {
			t.Errorf("header @%d = %d, want %d", f.off, got, f.want)
		}
	}
	if sh[63] != 0 || sh[64] != 0xee {
		t.Errorf("Init touched the wrong bytes: pad %x, ring %x", sh[63], sh[64])
	}
}

func TestGeometryErrors(t *testing.T) {
	if _, err := NewFront(make([]byte, 100), 112); !errors.Is(err, ErrGeometry) {
		t.Errorf("tiny ring: %v", err)
	}
	buf := AlignedBytes(4097)
	if _, err := NewBack(buf[1:], 112); !errors.Is(err, ErrGeometry) {
		t.Errorf("misaligned ring: %v", err)
	}
}

// pair builds a front and back on one page, attached at index start.
func pair(t testing.TB, esize int, start uint32) (*Front, *Back, []byte) {
	sh := AlignedBytes(4096)
	Init(sh)
	Store32(sh, abi.RING_REQ_PROD, start)
	Store32(sh, abi.RING_RSP_PROD, start)
	Store32(sh, abi.RING_REQ_EVENT, start+1)
	Store32(sh, abi.RING_RSP_EVENT, start+1)
	f, err := NewFront(sh, esize)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBack(sh, esize)
	if err != nil {
		t.Fatal(err)
	}
	f.reqProdPvt, f.reqPushed, f.rspCons = start, start, start
	b.rspProdPvt, b.rspPushed, b.reqCons = start, start, start
	return f, b, sh
}

func TestRequestResponse(t *testing.T) {
	f, b, _ := pair(t, abi.BlkifRequestSize, 0)
	if f.Size() != 32 || f.Free() != 32 {
		t.Fatalf("size %d free %d", f.Size(), f.Free())
	}
	for i := range 3 {
		f.NextRequest()[0] = byte(i)
	}
	if !f.PushRequests() {
		t.Error("first push after init must notify (req_event = 1)")
	}
	for i := range 3 {
		req, err := b.NextRequest()
		if err != nil || req == nil || req[0] != byte(i) {
			t.Fatalf("request %d: %v %v", i, req, err)
		}
		b.NextResponse()[0] = byte(10 + i)
	}
	if req, _ := b.NextRequest(); req != nil {
		t.Fatal("phantom request")
	}
	if b.NextResponse() != nil {
		t.Fatal("response slot without a request")
	}
	if !b.PushResponses() {
		t.Error("first response push must notify")
	}
	// The back end did not re-arm req_event, so more requests don't notify.
	f.NextRequest()
	if f.PushRequests() {
		t.Error("push notified although req_event was not re-armed")
	}
	for i := range 3 {
		rsp, err := f.NextResponse()
		if err != nil || rsp[0] != byte(10+i) {
			t.Fatalf("response %d: %v %v", i, rsp, err)
		}
	}
	if f.Free() != 31 {
		t.Errorf("free = %d, want 31", f.Free())
	}
}

func TestFullRing(t *testing.T) {
	f, b, _ := pair(t, 1024, 0xffff_fffe) // 3 entries -> 2, and the index wraps
	if f.Size() != 2 {
		t.Fatalf("size %d", f.Size())
	}
	f.NextRequest()
	f.NextRequest()
	if !f.Full() || f.NextRequest() != nil {
		t.Fatal("ring of 2 took a third request")
	}
	f.PushRequests()
	b.NextRequest()
	b.NextRequest()
	b.NextResponse()
	b.PushResponses()
	if _, err := f.NextResponse(); err != nil {
		t.Fatal(err)
	}
	if f.Free() != 1 || f.NextRequest() == nil {
		t.Fatal("slot not freed by its response")
	}
}

func TestPeerOverflow(t *testing.T) {
	t.Run("req_prod too far ahead", func(t *testing.T) {
		_, b, sh := pair(t, 112, 0xffff_fff0)
		Store32(sh, abi.RING_REQ_PROD, 0xffff_fff0+33-(1<<32))
		if _, err := b.NextRequest(); !errors.Is(err, ErrOverflow) {
			t.Fatalf("err = %v", err)
		}
		if _, err := b.FinalCheckForRequests(); !errors.Is(err, ErrOverflow) {
			t.Fatalf("final check err = %v", err)
		}
	})
	t.Run("req_prod behind", func(t *testing.T) {
		_, b, sh := pair(t, 112, 100)
		Store32(sh, abi.RING_REQ_PROD, 99)
		if _, err := b.PendingRequests(); !errors.Is(err, ErrOverflow) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("full ring is not overflow", func(t *testing.T) {
		_, b, sh := pair(t, 112, 5)
		Store32(sh, abi.RING_REQ_PROD, 5+32)
		if n, err := b.PendingRequests(); n != 32 || err != nil {
			t.Fatalf("pending = %d, %v", n, err)
		}
	})
	t.Run("responses never requested", func(t *testing.T) {
		f, _, sh := pair(t, 112, 7)
		f.NextRequest()
		f.PushRequests()
		Store32(sh, abi.RING_RSP_PROD, 7+2)
		if _, err := f.NextResponse(); !errors.Is(err, ErrOverflow) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unpushed requests cannot be answered", func(t *testing.T) {
		f, _, sh := pair(t, 112, 7)
		f.NextRequest()
		Store32(sh, abi.RING_RSP_PROD, 8)
		if _, err := f.PendingResponses(); !errors.Is(err, ErrOverflow) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestAgainstModel drives a front and a back end with random operations
// and checks them against FIFO queues. It also checks the notification
// protocol: a side that went to sleep after a final check that found no
// work must be notified by the next push that gives it work.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		start := uint32(0)
		if seed%2 == 1 {
			start = -uint32(r.IntN(100)) // wraps during the run
		}
		esize := 4 + r.IntN(200)
		f, b, _ := pair(t, esize, start)
		n := int(f.Size())

		var (
			next        uint32   // next request id
			produced    []uint32 // produced, not pushed
			pushed      []uint32 // pushed, not consumed
			consumed    []uint32 // consumed, not answered
			answered    []uint32 // answered, not pushed
			responses   []uint32 // pushed responses, not consumed
			backAsleep  bool
			frontAsleep bool
		)
		inFlight := func() int {
			return len(produced) + len(pushed) + len(consumed) + len(answered) + len(responses)
		}
		for step := range 3000 {
			switch r.IntN(7) {
			case 0: // front produces
				s := f.NextRequest()
				if inFlight() == n {
					if s != nil {
						t.Fatalf("seed %d step %d: slot from a full ring", seed, step)
					}
					continue
				}
				binary.LittleEndian.PutUint32(s, next)
				produced = append(produced, next)
				next++
			case 1: // front pushes
				notify := f.PushRequests()
				gave := len(produced) > 0
				pushed = append(pushed, produced...)
				produced = nil
				if backAsleep && gave && !notify {
					t.Fatalf("seed %d step %d: lost wake-up of the back end", seed, step)
				}
				if notify {
					backAsleep = false
				}
			case 2: // back consumes
				req, err := b.NextRequest()
				if err != nil {
					t.Fatal(err)
				}
				if len(pushed) == 0 {
					if req != nil {
						t.Fatalf("seed %d step %d: phantom request", seed, step)
					}
					continue
				}
				if got := binary.LittleEndian.Uint32(req); got != pushed[0] {
					t.Fatalf("seed %d step %d: request %d, want %d", seed, step, got, pushed[0])
				}
				consumed = append(consumed, pushed[0])
				pushed = pushed[1:]
			case 3: // back answers
				s := b.NextResponse()
				if len(consumed) == 0 {
					if s != nil {
						t.Fatalf("seed %d step %d: response slot with nothing to answer", seed, step)
					}
					continue
				}
				binary.LittleEndian.PutUint32(s, ^consumed[0])
				answered = append(answered, consumed[0])
				consumed = consumed[1:]
			case 4: // back pushes
				notify := b.PushResponses()
				gave := len(answered) > 0
				responses = append(responses, answered...)
				answered = nil
				if frontAsleep && gave && !notify {
					t.Fatalf("seed %d step %d: lost wake-up of the front end", seed, step)
				}
				if notify {
					frontAsleep = false
				}
			case 5: // front consumes a response
				rsp, err := f.NextResponse()
				if err != nil {
					t.Fatal(err)
				}
				if len(responses) == 0 {
					if rsp != nil {
						t.Fatalf("seed %d step %d: phantom response", seed, step)
					}
					continue
				}
				if got := ^binary.LittleEndian.Uint32(rsp); got != responses[0] {
					t.Fatalf("seed %d step %d: response to %d, want %d", seed, step, got, responses[0])
				}
				responses = responses[1:]
			case 6: // one side checks for work and sleeps if there is none
				if r.IntN(2) == 0 {
					work, err := b.FinalCheckForRequests()
					if err != nil || work != (len(pushed) > 0) {
						t.Fatalf("seed %d step %d: back final check %v %v, pending %d", seed, step, work, err, len(pushed))
					}
					backAsleep = !work
				} else {
					work, err := f.FinalCheckForResponses()
					if err != nil || work != (len(responses) > 0) {
						t.Fatalf("seed %d step %d: front final check %v %v, pending %d", seed, step, work, err, len(responses))
					}
					frontAsleep = !work
				}
			}
			if got, want := int(f.Free()), n-inFlight(); got != want {
				t.Fatalf("seed %d step %d: free %d, want %d", seed, step, got, want)
			}
			if got, _ := b.PendingRequests(); int(got) != len(pushed) {
				t.Fatalf("seed %d step %d: pending requests %d, want %d", seed, step, got, len(pushed))
			}
			if got, _ := f.PendingResponses(); int(got) != len(responses) {
				t.Fatalf("seed %d step %d: pending responses %d, want %d", seed, step, got, len(responses))
			}
		}
	}
}

func TestByteAtomics(t *testing.T) {
	b := AlignedBytes(8)
	b[22%8] = 0
	if old := Or8(b, 6, abi.VCHAN_NOTIFY_WRITE); old != 0 {
		t.Fatalf("old = %d", old)
	}
	Or8(b, 7, 0xf0)
	if old := And8(b, 6, ^uint8(abi.VCHAN_NOTIFY_WRITE)); old != abi.VCHAN_NOTIFY_WRITE {
		t.Fatalf("fetch-and-clear old = %d", old)
	}
	if b[6] != 0 || b[7] != 0xf0 || b[5] != 0 {
		t.Fatalf("neighbours changed: % x", b)
	}
	if !CompareAndSwap32(b, 4, 0xf0000000, 1) || Load32(b, 4) != 1 || CompareAndSwap32(b, 4, 0, 2) {
		t.Fatal("CompareAndSwap32")
	}
}

// FuzzBackRing lets a hostile front end choose every shared index: the
// back end must never hand out more requests than the ring holds before
// answering them, nor panic.
func FuzzBackRing(f *testing.F) {
	f.Add(uint32(0), uint32(5), uint32(1), []byte{1, 2, 3})
	f.Add(uint32(0xfffffff0), uint32(0x10), uint32(0), []byte{0})
	f.Fuzz(func(t *testing.T, start, reqProd, reqEvent uint32, script []byte) {
		_, b, sh := pair(t, abi.BlkifRequestSize, start)
		Store32(sh, abi.RING_REQ_PROD, reqProd)
		Store32(sh, abi.RING_REQ_EVENT, reqEvent)
		outstanding := 0
		for _, op := range script {
			switch op % 4 {
			case 0, 1:
				req, err := b.NextRequest()
				if req != nil {
					outstanding++
				} else if err == nil && reqProd != b.reqCons && outstanding < int(b.Size()) {
					t.Fatalf("refused a valid request")
				}
			case 2:
				if b.NextResponse() != nil {
					outstanding--
				}
				b.PushResponses()
			case 3:
				reqProd += uint32(op)
				Store32(sh, abi.RING_REQ_PROD, reqProd)
			}
			if outstanding < 0 || outstanding > int(b.Size()) {
				t.Fatalf("outstanding requests %d on a ring of %d", outstanding, b.Size())
			}
		}
	})
}

// FuzzFrontRing lets a hostile back end choose rsp_prod: the front end
// must never consume more responses than it pushed requests.
func FuzzFrontRing(f *testing.F) {
	f.Add(uint32(0), uint8(3), uint32(2))
	f.Fuzz(func(t *testing.T, start uint32, reqs uint8, rspProd uint32) {
		fr, _, sh := pair(t, 64, start)
		for range int(reqs) % 64 {
			if fr.NextRequest() == nil {
				break
			}
		}
		fr.PushRequests()
		Store32(sh, abi.RING_RSP_PROD, rspProd)
		got := 0
		for {
			rsp, err := fr.NextResponse()
			if rsp == nil {
				if err == nil && got != int(rspProd-start) {
					t.Fatalf("consumed %d of %d valid responses", got, rspProd-start)
				}
				break
			}
			got++
			if got > int(reqs)%64 || got > int(fr.Size()) {
				t.Fatalf("consumed %d responses for %d requests", got, reqs)
			}
		}
	})
}

func TestAlignedBytes(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 4097} {
		b := AlignedBytes(n)
		if len(b) != n || !Aligned(b) {
			t.Errorf("AlignedBytes(%d): len %d aligned %v", n, len(b), Aligned(b))
		}
	}
	if Aligned(AlignedBytes(8)[1:]) {
		t.Error("offset 1 reported aligned")
	}
}
