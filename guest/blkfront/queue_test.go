package blkfront

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"shi/internal/abi"
	"shi/internal/ring"
)

// memBack is a back end over plain memory for the queue's tests: it
// reads requests from the ring, resolves grant refs to pool pages
// itself, and serves a byte slice.
type memBack struct {
	back  *ring.Back
	pool  []byte
	grefs map[abi.GrantRef]int
	disk  []byte
	ops   []uint8
}

// newTestQueue makes a ring of one page, a pool of pages granted under
// refs 100.., and a back end serving disk.
func newTestQueue(t testing.TB, pages, maxIndirect int, disk []byte) (*queue, *memBack, *[]int) {
	t.Helper()
	shared := ring.AlignedBytes(abi.PAGE_SIZE)
	ring.Init(shared)
	pool := make([]byte, pages*abi.PAGE_SIZE)
	var grefs []abi.GrantRef
	mb := &memBack{pool: pool, grefs: map[abi.GrantRef]int{}, disk: disk}
	for i := range pages {
		grefs = append(grefs, abi.GrantRef(100+i))
		mb.grefs[abi.GrantRef(100+i)] = i
	}
	reported := new([]int)
	q, err := newQueue(shared, pool, grefs, 51712, maxIndirect, func(b []byte) { *reported = append(*reported, len(b)) })
	if err != nil {
		t.Fatal(err)
	}
	if mb.back, err = ring.NewBack(shared, abi.BlkifRequestSize); err != nil {
		t.Fatal(err)
	}
	return q, mb, reported
}

func (m *memBack) page(g abi.GrantRef) []byte {
	i, ok := m.grefs[g]
	if !ok {
		panic("unknown gref")
	}
	return m.pool[i*abi.PAGE_SIZE : (i+1)*abi.PAGE_SIZE]
}

// serve answers every request pushed, as blkback would.
func (m *memBack) serve(t testing.TB) {
	t.Helper()
	for {
		slot, err := m.back.NextRequest()
		if err != nil {
			t.Fatal(err)
		}
		if slot == nil {
			break
		}
		op := slot[0]
		m.ops = append(m.ops, op)
		id := binary.LittleEndian.Uint64(slot[8:])
		var segs []abi.BlkifSegment
		var sector uint64
		rop := op
		switch op {
		case abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE:
			r, _ := abi.DecodeBlkifRequest(slot)
			if r.Handle != 51712 {
				t.Fatalf("handle %d", r.Handle)
			}
			s, err := r.Segments()
			if err != nil {
				t.Fatal(err)
			}
			segs, sector = s, r.SectorNumber
		case abi.BLKIF_OP_INDIRECT:
			r, _ := abi.DecodeBlkifRequestIndirect(slot)
			for i := range int(r.NrSegments) {
				pg := m.page(r.IndirectGrefs[i/abi.BLKIF_SEGS_PER_INDIRECT_FRAME])
				s, _ := abi.DecodeBlkifSegment(pg[i%abi.BLKIF_SEGS_PER_INDIRECT_FRAME*8:])
				segs = append(segs, s)
			}
			rop, sector = r.IndirectOp, r.SectorNumber
		case abi.BLKIF_OP_DISCARD:
			r, _ := abi.DecodeBlkifRequestDiscard(slot)
			clear(m.disk[r.SectorNumber*512 : (r.SectorNumber+r.NrSectors)*512])
		case abi.BLKIF_OP_FLUSH_DISKCACHE:
		default:
			t.Fatalf("op %d", op)
		}
		off := int(sector) * 512
		for _, s := range segs {
			pg := m.page(s.Gref)[int(s.FirstSect)*512 : (int(s.LastSect)+1)*512]
			if rop == abi.BLKIF_OP_READ {
				copy(pg, m.disk[off:])
			} else {
				copy(m.disk[off:], pg)
			}
			off += len(pg)
		}
		rsp := abi.BlkifResponse{ID: id, Operation: rop, Status: abi.BLKIF_RSP_OKAY}
		rsp.Encode(m.back.NextResponse())
	}
	m.back.PushResponses()
}

// run submits r through the queue as Disk does, without the lock.
func run(t testing.TB, q *queue, m *memBack, rs ...*request) {
	t.Helper()
	for _, r := range rs {
		if !q.canReserve(r) {
			t.Fatalf("no room for a request of %d bytes", r.n)
		}
		q.reserve(r)
		q.fill(r)
		q.produce(r)
	}
	q.push()
	m.serve(t)
	var done []*request
	if err := q.responses(func(r *request) { done = append(done, r) }); err != nil {
		t.Fatal(err)
	}
	if len(done) != len(rs) {
		t.Fatalf("%d answered of %d", len(done), len(rs))
	}
	for _, r := range done {
		if r.err != nil {
			t.Fatal(r.err)
		}
		q.readOut(r)
		q.release(r)
	}
}

// TestQueueModel: random reads, writes and discards through the ring,
// direct and indirect, against a byte-slice model.
func TestQueueModel(t *testing.T) {
	for _, maxIndirect := range []int{0, 64, 1024} {
		const size = 4 << 20
		q, m, _ := newTestQueue(t, 128, maxIndirect, make([]byte, size))
		model := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(maxIndirect), 1))
		for range 150 {
			var rs []*request
			used := 0
			for range 1 + rng.IntN(4) {
				n := (1 + rng.IntN(q.maxBytes()/512)) * 512
				off := rng.IntN((size-n)/512) * 512
				r := &request{sector: uint64(off / 512), n: n, buf: make([]byte, n)}
				switch rng.IntN(5) {
				case 0, 1:
					r.op = abi.BLKIF_OP_READ
				case 2, 3:
					r.op = abi.BLKIF_OP_WRITE
					for i := range r.buf {
						r.buf[i] = byte(rng.Uint32())
					}
				case 4:
					r.op, r.n, r.nsect, r.buf = abi.BLKIF_OP_DISCARD, 0, uint64(n/512), nil
				}
				data, desc := q.needs(r)
				if used += data + desc; used > len(q.freePages) {
					break
				}
				rs = append(rs, r)
			}
			// The batch in flight at once; the back end serves it in
			// order, and so does the model.
			run(t, q, m, rs...)
			for _, r := range rs {
				off := int(r.sector) * 512
				switch r.op {
				case abi.BLKIF_OP_READ:
					if !bytes.Equal(r.buf, model[off:off+r.n]) {
						t.Fatalf("indirect %d: read %d bytes at sector %d differs", maxIndirect, r.n, r.sector)
					}
				case abi.BLKIF_OP_WRITE:
					copy(model[off:], r.buf)
				case abi.BLKIF_OP_DISCARD:
					clear(model[off : off+int(r.nsect)*512])
				}
			}
		}
		if len(q.freePages) != 128 || len(q.freeIDs) != int(q.front.Size()) || q.busy != 0 {
			t.Fatalf("leak: %d pages, %d ids free, %d busy", len(q.freePages), len(q.freeIDs), q.busy)
		}
		indirect := 0
		for _, op := range m.ops {
			if op == abi.BLKIF_OP_INDIRECT {
				indirect++
			}
		}
		if (indirect > 0) != (maxIndirect > 0) {
			t.Fatalf("max indirect %d: %d indirect requests", maxIndirect, indirect)
		}
		t.Logf("max indirect %d: max %d segments, %d requests, %d indirect", maxIndirect, q.maxSegs, len(m.ops), indirect)
	}
}

// TestQueueReportsWrites: every byte a request puts in shared memory is
// reported, so a release across hosts ships it.
func TestQueueReportsWrites(t *testing.T) {
	q, m, reported := newTestQueue(t, 64, 64, make([]byte, 1<<20))
	r := &request{op: abi.BLKIF_OP_WRITE, n: 20 * 4096, buf: make([]byte, 20*4096)}
	run(t, q, m, r)
	// 20 data pages, one indirect page of 20 descriptors, the slot,
	// req_prod.
	want := []int{}
	for range 20 {
		want = append(want, 4096)
	}
	want = append(want, 20*8, abi.BlkifRequestSize, 4)
	if got := *reported; len(got) != len(want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	for i, n := range want {
		if (*reported)[i] != n {
			t.Fatalf("reported %v, want %v", *reported, want)
		}
	}
}

// respond writes raw responses into the ring as a hostile back end
// would, and moves rsp_prod by prod.
func respond(shared []byte, m *memBack, prod uint32, rsps ...abi.BlkifResponse) {
	for _, r := range rsps {
		slot := m.back.NextResponse()
		if slot == nil { // answer more than asked: write past it
			base := ring.Load32(shared, abi.RING_RSP_PROD)
			o := abi.RING_HEADER_SIZE + int(base%32)*abi.BlkifRequestSize
			slot = shared[o : o+abi.BlkifRequestSize]
		}
		r.Encode(slot)
	}
	ring.Store32(shared, abi.RING_RSP_PROD, ring.Load32(shared, abi.RING_RSP_PROD)+prod)
}

// TestQueueHostile: responses a back end must not send fail the queue
// (ErrProtocol) or their request (a bad status), never anything else.
func TestQueueHostile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rsp      func(r *request) abi.BlkifResponse
		prod     uint32
		protocol bool
		status   error
	}{
		{"unknown id", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: r.id + 1, Operation: r.op} }, 1, true, nil},
		{"stale generation", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: r.id + 1<<16, Operation: r.op} }, 1, true, nil},
		{"id past the table", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: 0xffff, Operation: r.op} }, 1, true, nil},
		{"wrong operation", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: r.id, Operation: abi.BLKIF_OP_WRITE} }, 1, true, nil},
		{"more responses than requests", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: r.id, Operation: r.op} }, 5, true, nil},
		{"error", func(r *request) abi.BlkifResponse {
			return abi.BlkifResponse{ID: r.id, Operation: r.op, Status: abi.BLKIF_RSP_ERROR}
		}, 1, false, syscall.EIO},
		{"eopnotsupp", func(r *request) abi.BlkifResponse {
			return abi.BlkifResponse{ID: r.id, Operation: r.op, Status: abi.BLKIF_RSP_EOPNOTSUPP}
		}, 1, false, syscall.EOPNOTSUPP},
		{"undefined status", func(r *request) abi.BlkifResponse { return abi.BlkifResponse{ID: r.id, Operation: r.op, Status: 7} }, 1, false, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, m, _ := newTestQueue(t, 16, 0, make([]byte, 1<<20))
			r := &request{op: abi.BLKIF_OP_READ, n: 4096, buf: make([]byte, 4096)}
			q.reserve(r)
			q.fill(r)
			q.produce(r)
			q.push()
			if _, err := m.back.NextRequest(); err != nil {
				t.Fatal(err)
			}
			respond(q.ring, m, tc.prod, tc.rsp(r))
			var done []*request
			err := q.responses(func(r *request) { done = append(done, r) })
			if tc.protocol {
				if !errors.Is(err, ErrProtocol) || !errors.Is(err, syscall.EIO) || len(done) != 0 {
					t.Fatalf("err %v, %d answered", err, len(done))
				}
				t.Logf("%v", err)
				if got := q.abandon(); len(got) != 1 || got[0] != r {
					t.Fatalf("abandon %v", got)
				}
				return
			}
			if err != nil || len(done) != 1 || !errors.Is(done[0].err, tc.status) {
				t.Fatalf("err %v, answered %d", err, len(done))
			}
			// A replay of the same response names nothing now.
			respond(q.ring, m, 1, tc.rsp(r))
			if err := q.responses(func(*request) { t.Fatal("answered twice") }); !errors.Is(err, ErrProtocol) {
				t.Fatalf("replayed response: %v", err)
			}
		})
	}
}

// FuzzResponses: whatever a back end writes into the response slots and
// rsp_prod, the queue answers each request at most once, with an error
// it can explain, or fails with ErrProtocol; it never panics, and its
// ids and pages add up.
func FuzzResponses(f *testing.F) {
	ok := make([]byte, 20)
	f.Add(ok)
	f.Add(bytes.Repeat([]byte{0xff}, 80))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		q, m, _ := newTestQueue(t, 32, 64, make([]byte, 1<<20))
		var rs []*request
		for i, op := range []uint8{abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE, abi.BLKIF_OP_FLUSH_DISKCACHE, abi.BLKIF_OP_DISCARD, abi.BLKIF_OP_READ} {
			r := &request{op: op, sector: uint64(i * 8)}
			switch op {
			case abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE:
				r.n = (1 + i*3) * 4096 // the last goes indirect
				r.buf = make([]byte, r.n)
			case abi.BLKIF_OP_DISCARD:
				r.nsect = 8
			}
			q.reserve(r)
			q.fill(r)
			q.produce(r)
			rs = append(rs, r)
		}
		q.push()
		for {
			if s, _ := m.back.NextRequest(); s == nil {
				break
			}
		}
		answered := map[*request]int{}
		// Each 20 bytes: a response (16) and how far rsp_prod moves (4).
		for len(data) >= 20 {
			var rsp abi.BlkifResponse
			rsp, _ = abi.DecodeBlkifResponse(data)
			// Let the fuzzer name real ids with a small number.
			if rsp.ID < uint64(len(rs)) {
				rsp.ID = rs[rsp.ID].id
			}
			prod := binary.LittleEndian.Uint32(data[16:])
			data = data[20:]
			respond(q.ring, m, prod, rsp)
			err := q.responses(func(r *request) {
				answered[r]++
				q.readOut(r)
				q.release(r)
			})
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("error %v is not ErrProtocol", err)
				}
				q.abandon()
				return
			}
		}
		held := 0
		for _, r := range rs {
			switch answered[r] {
			case 0:
				held += len(r.pages) + len(r.indirect)
			case 1:
				if r.err != nil && !errors.Is(r.err, syscall.EIO) && !errors.Is(r.err, syscall.EOPNOTSUPP) {
					t.Fatalf("request error %v", r.err)
				}
			default:
				t.Fatalf("request answered %d times", answered[r])
			}
		}
		if held+len(q.freePages) != 32 || q.busy+len(q.freeIDs) != int(q.front.Size()) {
			t.Fatalf("pages %d held + %d free, ids %d busy + %d free", held, len(q.freePages), q.busy, len(q.freeIDs))
		}
	})
}
