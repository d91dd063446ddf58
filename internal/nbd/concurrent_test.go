package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// gateMem holds a read at offset 0 until the test lets it go (once a
// read elsewhere has been answered), or 5 s: a server serving one request
// at a time answers late and in order.
type gateMem struct {
	*Mem
	release chan struct{}
}

func (g *gateMem) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		select {
		case <-g.release:
		case <-time.After(5 * time.Second):
		}
	}
	return g.Mem.ReadAt(p, off)
}

func TestConcurrentRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		g := &gateMem{Mem: NewMem(1<<20, false), release: make(chan struct{})}
		g.Mem.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
		g.Mem.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192)
		s, err := NewServer(Export{Name: "g", Backend: g})
		if err != nil {
			t.Fatal(err)
		}
		tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
		if structured {
			tc.opt(NBD_OPT_STRUCTURED_REPLY, nil)
		}
		tc.goExport("g")
		start := time.Now()
		first := tc.request(NBD_CMD_READ, 0, 0, 4096, nil)
		second := tc.request(NBD_CMD_READ, 0, 8192, 4096, nil)
		// The second read is answered first, while the first still waits.
		if r := tc.reply(second, 8192, 4096); r.Err != 0 || !bytes.Equal(r.Data, bytes.Repeat([]byte{2}, 4096)) {
			t.Fatalf("second read: %v", r)
		}
		close(g.release)
		if r := tc.reply(first, 0, 4096); r.Err != 0 || !bytes.Equal(r.Data, bytes.Repeat([]byte{1}, 4096)) {
			t.Fatalf("first read: %v", r)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the reads took %v: served one at a time", d)
		}
	}

	// Overlapping requests keep their order when one writes: a pipelined
	// write, read-back, overwrite and read-back see each other.
	s, m := newTestServer(t, false)
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	tc.goExport("xvda")
	// The requests go from another goroutine, as a real client's do: the
	// pipe has no buffer, and the replies must be read meanwhile.
	var ids []uint64
	var reqs []byte
	for i := 0; i < 50; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 64<<10)
		ids = append(ids, uint64(2*i+1), uint64(2*i+2))
		reqs = append(appendRequest(reqs, Request{Type: NBD_CMD_WRITE, Cookie: uint64(2*i + 1), Offset: uint64(i%3) * 4096, Length: 64 << 10}), p...)
		reqs = appendRequest(reqs, Request{Type: NBD_CMD_READ, Cookie: uint64(2*i + 2), Offset: uint64(i%3)*4096 + 512, Length: 4096})
	}
	go tc.c.Write(reqs)
	reads := map[uint64]bool{}
	for i := 1; i < len(ids); i += 2 {
		reads[ids[i]] = true
	}
	got := map[uint64]reply{}
	for range ids {
		// Replies may come in any order: read each as whichever it is.
		id, r := tc.anySimpleReply(reads, 4096)
		got[id] = r
	}
	for i := 0; i < 50; i++ {
		if r := got[ids[2*i+1]]; r.Err != 0 || !bytes.Equal(r.Data, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("read-back %d: %v % x", i, r, r.Data[:8])
		}
	}
	b := make([]byte, 4096)
	m.ReadAt(b, 2*4096)
	if !bytes.Equal(b, bytes.Repeat([]byte{49}, 4096)) {
		t.Fatal("the last write is not the one left")
	}
}

// anySimpleReply reads one simple reply, whatever its cookie; one to a
// cookie in reads carries readLen bytes of data when it succeeds.
func (tc *testClient) anySimpleReply(reads map[uint64]bool, readLen int) (uint64, reply) {
	tc.t.Helper()
	var h [16]byte
	tc.full(h[:])
	if m := binary.BigEndian.Uint32(h[:]); m != NBD_SIMPLE_REPLY_MAGIC {
		tc.t.Fatalf("bad reply magic %#x", m)
	}
	id := binary.BigEndian.Uint64(h[8:])
	r := reply{Err: binary.BigEndian.Uint32(h[4:])}
	if r.Err == 0 && reads[id] {
		r.Data = make([]byte, readLen)
		tc.full(r.Data)
	}
	return id, r
}
