package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"
)

const testSize = 1 << 20

func newTestServer(t *testing.T, ro bool) (*Server, *Mem) {
	t.Helper()
	m := NewMem(testSize, ro)
	s, err := NewServer(Export{Name: "xvda", Description: "test disk", Backend: m},
		Export{Name: "other", Backend: NewMem(4096, true)})
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestNegotiation(t *testing.T) {
	s, _ := newTestServer(t, false)
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)

	reps := tc.opt(NBD_OPT_LIST, nil)
	if len(reps) != 3 || reps[0].Type != NBD_REP_SERVER || reps[2].Type != NBD_REP_ACK {
		t.Fatalf("LIST: %+v", reps)
	}
	if want := append(appendString32(nil, "xvda"), "test disk"...); !bytes.Equal(reps[0].Data, want) {
		t.Fatalf("LIST entry % x, want % x", reps[0].Data, want)
	}
	if r := tc.opt(NBD_OPT_LIST, []byte{1}); r[0].Type != NBD_REP_ERR_INVALID {
		t.Fatalf("LIST with data: %#x", r[0].Type)
	}
	if r := tc.opt(99, []byte("x")); r[0].Type != NBD_REP_ERR_UNSUP {
		t.Fatalf("unknown option: %#x", r[0].Type)
	}
	if r := tc.opt(NBD_OPT_STARTTLS, nil); r[0].Type != NBD_REP_ERR_UNSUP {
		t.Fatalf("STARTTLS: %#x", r[0].Type)
	}
	if r := tc.opt(NBD_OPT_INFO, infoData("nope")); r[0].Type != NBD_REP_ERR_UNKNOWN {
		t.Fatalf("INFO unknown export: %#x", r[0].Type)
	}
	if r := tc.opt(NBD_OPT_INFO, []byte{0, 0, 0, 9, 'x'}); r[0].Type != NBD_REP_ERR_INVALID {
		t.Fatalf("INFO truncated: %#x", r[0].Type)
	}
	infos := map[uint16][]byte{}
	for _, r := range tc.opt(NBD_OPT_INFO, infoData("xvda", NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE)) {
		if r.Type == NBD_REP_INFO {
			infos[binary.BigEndian.Uint16(r.Data)] = r.Data[2:]
		}
	}
	if e := infos[NBD_INFO_EXPORT]; len(e) != 10 || binary.BigEndian.Uint64(e) != testSize {
		t.Fatalf("INFO_EXPORT % x", e)
	}
	if bs := infos[NBD_INFO_BLOCK_SIZE]; len(bs) != 12 || binary.BigEndian.Uint32(bs[8:]) != MaxPayload {
		t.Fatalf("INFO_BLOCK_SIZE % x", bs)
	}
	if string(infos[NBD_INFO_NAME]) != "xvda" || string(infos[NBD_INFO_DESCRIPTION]) != "test disk" {
		t.Fatalf("INFO name/description %q %q", infos[NBD_INFO_NAME], infos[NBD_INFO_DESCRIPTION])
	}

	// Meta contexts: SET needs structured replies first.
	if r := tc.opt(NBD_OPT_SET_META_CONTEXT, metaData("xvda", metaBaseAllocation)); r[0].Type != NBD_REP_ERR_INVALID {
		t.Fatalf("SET_META before STRUCTURED_REPLY: %#x", r[0].Type)
	}
	for _, q := range [][]string{nil, {"base:"}, {metaBaseAllocation}} {
		r := tc.opt(NBD_OPT_LIST_META_CONTEXT, metaData("xvda", q...))
		if len(r) != 2 || r[0].Type != NBD_REP_META_CONTEXT || string(r[0].Data[4:]) != metaBaseAllocation {
			t.Fatalf("LIST_META %q: %+v", q, r)
		}
	}
	if r := tc.opt(NBD_OPT_LIST_META_CONTEXT, metaData("xvda", "qemu:dirty-bitmap:x")); len(r) != 1 || r[0].Type != NBD_REP_ACK {
		t.Fatalf("LIST_META unknown: %+v", r)
	}
	if r := tc.opt(NBD_OPT_STRUCTURED_REPLY, nil); r[0].Type != NBD_REP_ACK {
		t.Fatalf("STRUCTURED_REPLY: %#x", r[0].Type)
	}
	if r := tc.opt(NBD_OPT_SET_META_CONTEXT, metaData("xvda", "base:", metaBaseAllocation)); len(r) != 2 || binary.BigEndian.Uint32(r[0].Data) != metaBaseAllocationID {
		t.Fatalf("SET_META: %+v", r)
	}
	size, flags := tc.goExport("xvda")
	want := uint16(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF)
	if size != testSize || flags != want {
		t.Fatalf("GO: size %d flags %#x, want %d %#x", size, flags, testSize, want)
	}
	id := tc.request(NBD_CMD_BLOCK_STATUS, 0, 0, 8192, nil)
	if r := tc.reply(id, 0, 0); r.Err != 0 || len(r.Status) != 2 || r.Status[0] != 8192 || r.Status[1] != NBD_STATE_HOLE|NBD_STATE_ZERO {
		t.Fatalf("block status: %v %v", r, r.Status)
	}
	tc.request(NBD_CMD_DISC, 0, 0, 0, nil)
}

func TestAbortAndExportName(t *testing.T) {
	s, _ := newTestServer(t, false)
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	if r := tc.opt(NBD_OPT_ABORT, nil); r[0].Type != NBD_REP_ACK {
		t.Fatalf("ABORT: %#x", r[0].Type)
	}
	if _, err := tc.r.ReadByte(); err != io.EOF {
		t.Fatalf("after ABORT: %v, want EOF", err)
	}

	// Old-style EXPORT_NAME, without NO_ZEROES: 124 bytes of padding follow.
	tc = newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE)
	tc.sendOpt(NBD_OPT_EXPORT_NAME, []byte("other"))
	b := make([]byte, 8+2+124)
	tc.full(b)
	if binary.BigEndian.Uint64(b) != 4096 || binary.BigEndian.Uint16(b[8:])&NBD_FLAG_READ_ONLY == 0 || !bytes.Equal(b[10:], make([]byte, 124)) {
		t.Fatalf("EXPORT_NAME reply % x", b)
	}
	id := tc.request(NBD_CMD_READ, 0, 0, 4096, nil)
	if r := tc.reply(id, 0, 4096); r.Err != 0 || !bytes.Equal(r.Data, make([]byte, 4096)) {
		t.Fatalf("read: %v", r)
	}

	// An unknown name with EXPORT_NAME has no error reply: the server hangs up.
	tc = newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	tc.sendOpt(NBD_OPT_EXPORT_NAME, []byte("nope"))
	if _, err := tc.r.ReadByte(); err != io.EOF {
		t.Fatalf("after bad EXPORT_NAME: %v, want EOF", err)
	}
}

// TestTransmission drives random I/O against a model, simple replies first,
// then structured ones.
func TestTransmission(t *testing.T) {
	for _, structured := range []bool{false, true} {
		s, _ := newTestServer(t, false)
		tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
		if structured {
			tc.opt(NBD_OPT_STRUCTURED_REPLY, nil)
			tc.opt(NBD_OPT_SET_META_CONTEXT, metaData("xvda", metaBaseAllocation))
		}
		tc.goExport("xvda")
		model := make([]byte, testSize)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 400; i++ {
			off := rng.Uint64N(testSize)
			n := uint32(rng.Uint64N(min(testSize-off, 200<<10) + 1))
			var id uint64
			switch op := rng.IntN(5); op {
			case 0, 1:
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				fl := uint16(0)
				if op == 1 {
					fl = NBD_CMD_FLAG_FUA
				}
				id = tc.request(NBD_CMD_WRITE, fl, off, n, p)
				copy(model[off:], p)
			case 2:
				id = tc.request(NBD_CMD_TRIM, 0, off, n, nil)
				clear(model[off : off+uint64(n)]) // Mem trims to zeroes
			case 3:
				fl := uint16(0)
				if rng.IntN(2) == 0 {
					fl = NBD_CMD_FLAG_NO_HOLE
				}
				id = tc.request(NBD_CMD_WRITE_ZEROES, fl, off, n, nil)
				clear(model[off : off+uint64(n)])
			case 4:
				id = tc.request(NBD_CMD_FLUSH, 0, 0, 0, nil)
			}
			if r := tc.reply(id, 0, 0); r.Err != 0 {
				t.Fatalf("op %d: %v", i, r)
			}
			off = rng.Uint64N(testSize)
			n = uint32(rng.Uint64N(min(testSize-off, 300<<10) + 1))
			id = tc.request(NBD_CMD_READ, 0, off, n, nil)
			if r := tc.reply(id, off, int(n)); r.Err != 0 || !bytes.Equal(r.Data, model[off:off+uint64(n)]) {
				t.Fatalf("structured=%v read %d+%d: %v, data differs", structured, off, n, r)
			}
		}
		if structured {
			// A whole-disk read of a partly trimmed disk comes back in several chunks.
			tc.request(NBD_CMD_TRIM, 0, 0, 64<<10, nil)
			tc.reply(tc.id, 0, 0)
			clear(model[:64<<10])
			id := tc.request(NBD_CMD_READ, 0, 0, testSize, nil)
			r := tc.reply(id, 0, testSize)
			if r.Err != 0 || !bytes.Equal(r.Data, model) || len(r.Chunks) < 2 || r.Chunks[0] != NBD_REPLY_TYPE_OFFSET_HOLE {
				t.Fatalf("whole read: %v", r)
			}
			id = tc.request(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, testSize, nil)
			if r := tc.reply(id, 0, testSize); len(r.Chunks) != 1 || !bytes.Equal(r.Data, model) {
				t.Fatalf("DF read: %v", r)
			}
			id = tc.request(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, testSize, nil)
			if r := tc.reply(id, 0, 0); len(r.Status) != 2 || r.Status[0] < 64<<10 || r.Status[1] != NBD_STATE_HOLE|NBD_STATE_ZERO {
				t.Fatalf("REQ_ONE block status: %v %v", r, r.Status)
			}
		}
		tc.request(NBD_CMD_DISC, 0, 0, 0, nil)
	}
}

func TestBadRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		s, m := newTestServer(t, false)
		tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
		if structured {
			tc.opt(NBD_OPT_STRUCTURED_REPLY, nil)
		}
		tc.goExport("xvda")
		big := make([]byte, MaxPayload+1)
		for _, c := range []struct {
			typ, flags uint16
			off        uint64
			n          uint32
			payload    []byte
			want       uint32
		}{
			{NBD_CMD_READ, 0, testSize - 10, 11, nil, NBD_EINVAL},
			{NBD_CMD_READ, 0, 1<<64 - 1, 2, nil, NBD_EINVAL},
			{NBD_CMD_READ, 0, 0, MaxPayload + 1, nil, NBD_EINVAL},
			{NBD_CMD_READ, 1 << 9, 0, 1, nil, NBD_EINVAL},
			{NBD_CMD_WRITE, 0, testSize - 1, 2, []byte{1, 2}, NBD_ENOSPC},
			{NBD_CMD_WRITE, 0, 0, MaxPayload + 1, big, NBD_EINVAL},
			{NBD_CMD_WRITE, 1 << 9, 0, 3, []byte{1, 2, 3}, NBD_EINVAL},
			{NBD_CMD_TRIM, 0, testSize, 1, nil, NBD_ENOSPC},
			{NBD_CMD_WRITE_ZEROES, 0, 1 << 63, 1 << 31, nil, NBD_ENOSPC},
			{NBD_CMD_FLUSH, 0, 1, 0, nil, NBD_EINVAL},
			{NBD_CMD_BLOCK_STATUS, 0, 0, 512, nil, NBD_EINVAL}, // no context
			{42, 0, 0, 0, nil, NBD_EINVAL},
		} {
			id := tc.request(c.typ, c.flags, c.off, c.n, c.payload)
			if r := tc.reply(id, c.off, 0); r.Err != c.want {
				t.Fatalf("structured=%v cmd %d %d+%d: %v, want errno %d", structured, c.typ, c.off, c.n, r, c.want)
			} else if structured && c.typ == NBD_CMD_READ && r.Msg == "" {
				t.Fatalf("read error chunk without a message")
			}
		}
		// Nothing was written, and the connection still works.
		if ext, _ := m.Extents(0, testSize); len(ext) != 1 || !ext[0].Hole {
			t.Fatalf("refused requests wrote: %+v", ext)
		}
		id := tc.request(NBD_CMD_WRITE, 0, 0, 2, []byte{7, 8})
		if r := tc.reply(id, 0, 0); r.Err != 0 {
			t.Fatalf("write after errors: %v", r)
		}
		// A bad magic ends the connection.
		tc.write(make([]byte, requestLen))
		if _, err := tc.r.ReadByte(); err != io.EOF {
			t.Fatalf("after bad magic: %v, want EOF", err)
		}
	}
}

func TestReadOnly(t *testing.T) {
	s, _ := newTestServer(t, true)
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	if _, flags := tc.goExport(""); flags&NBD_FLAG_READ_ONLY == 0 || flags&NBD_FLAG_SEND_TRIM != 0 {
		t.Fatalf("read-only flags %#x", flags)
	}
	for _, typ := range []uint16{NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES} {
		var p []byte
		if typ == NBD_CMD_WRITE {
			p = []byte{1}
		}
		id := tc.request(typ, 0, 0, 1, p)
		if r := tc.reply(id, 0, 0); r.Err != NBD_EPERM {
			t.Fatalf("cmd %d on read-only: %v", typ, r)
		}
	}
	id := tc.request(NBD_CMD_READ, 0, 0, 1, nil)
	if r := tc.reply(id, 0, 1); r.Err != 0 || r.Data[0] != 0 {
		t.Fatalf("read: %v", r)
	}
}

// TestServe runs concurrent connections over a Unix socket and stops them
// with the context.
func TestServe(t *testing.T) {
	s, _ := newTestServer(t, false)
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "nbd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	done := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			c, err := net.Dial("unix", ln.Addr().String())
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			// Handshake, GO, one write and read-back of this client's own block.
			b := make([]byte, 18)
			if _, err := io.ReadFull(c, b); err != nil {
				done <- err
				return
			}
			q := binary.BigEndian.AppendUint32(nil, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
			q = binary.BigEndian.AppendUint64(q, IHAVEOPT)
			q = binary.BigEndian.AppendUint32(q, NBD_OPT_GO)
			d := infoData("xvda")
			q = binary.BigEndian.AppendUint32(q, uint32(len(d)))
			q = append(q, d...)
			p := bytes.Repeat([]byte{byte(i + 1)}, 512)
			q = append(appendRequest(q, Request{Type: NBD_CMD_WRITE, Offset: uint64(i) * 512, Length: 512}), p...)
			q = appendRequest(q, Request{Type: NBD_CMD_READ, Cookie: 1, Offset: uint64(i) * 512, Length: 512})
			c.Write(q)
			// Three option replies (two INFO, ACK), then two simple replies.
			for k := 0; k < 3; k++ {
				h := make([]byte, 20)
				if _, err := io.ReadFull(c, h); err != nil {
					done <- err
					return
				}
				io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[16:])))
			}
			r := make([]byte, 16+16+512)
			if _, err := io.ReadFull(c, r); err != nil {
				done <- err
				return
			}
			if !bytes.Equal(r[32:], p) {
				done <- errors.New("read back differs")
				return
			}
			done <- nil
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// A connection left open is closed by cancel, and Serve returns.
	idle, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.ReadFull(idle, make([]byte, 18))
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// TestMetaContextExport checks a context chosen for one export is not used
// with another, and that errors come as chunks with reasons when structured.
func TestMetaContextExport(t *testing.T) {
	s, _ := newTestServer(t, false)
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	tc.opt(NBD_OPT_STRUCTURED_REPLY, nil)
	if r := tc.opt(NBD_OPT_SET_META_CONTEXT, metaData("other", metaBaseAllocation)); len(r) != 2 {
		t.Fatalf("SET_META: %+v", r)
	}
	tc.goExport("xvda")
	id := tc.request(NBD_CMD_BLOCK_STATUS, 0, 0, 4096, nil)
	if r := tc.reply(id, 0, 0); r.Err != NBD_EINVAL || r.Msg == "" {
		t.Fatalf("block status with another export's context: %v", r)
	}
	id = tc.request(NBD_CMD_READ, 0, 0, 0, nil)
	if r := tc.reply(id, 0, 0); r.Err != 0 || len(r.Chunks) != 1 || r.Chunks[0] != NBD_REPLY_TYPE_NONE {
		t.Fatalf("empty read: %v", r)
	}
	id = tc.request(NBD_CMD_WRITE, 0, testSize, 1, []byte{1})
	if r := tc.reply(id, 0, 0); r.Err != NBD_ENOSPC || len(r.Chunks) != 1 || r.Chunks[0] != NBD_REPLY_TYPE_ERROR || r.Msg == "" {
		t.Fatalf("write past end: %v", r)
	}
}
