package nbd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
)

// testClient speaks just enough NBD to drive the server from tests.
type testClient struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	id uint64
}

type optRep struct {
	Opt, Type uint32
	Data      []byte
}

// newTestClient serves one connection to s over a pipe and does the
// handshake with client flags.
func newTestClient(t *testing.T, s *Server, flags uint32) *testClient {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(b); b.Close() }()
	t.Cleanup(func() {
		a.Close()
		if err := <-done; err != nil {
			t.Logf("server: %v", err)
		}
	})
	tc := &testClient{t: t, c: a, r: bufio.NewReader(a)}
	var hs [18]byte
	tc.full(hs[:])
	if binary.BigEndian.Uint64(hs[:]) != NBDMAGIC || binary.BigEndian.Uint64(hs[8:]) != IHAVEOPT {
		t.Fatalf("bad handshake % x", hs)
	}
	if f := binary.BigEndian.Uint16(hs[16:]); f != NBD_FLAG_FIXED_NEWSTYLE|NBD_FLAG_NO_ZEROES {
		t.Fatalf("handshake flags %#x", f)
	}
	tc.write(binary.BigEndian.AppendUint32(nil, flags))
	return tc
}

func (tc *testClient) full(b []byte) {
	tc.t.Helper()
	if _, err := io.ReadFull(tc.r, b); err != nil {
		tc.t.Fatalf("read: %v", err)
	}
}

func (tc *testClient) write(b []byte) {
	tc.t.Helper()
	if _, err := tc.c.Write(b); err != nil {
		tc.t.Fatalf("write: %v", err)
	}
}

func (tc *testClient) sendOpt(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, IHAVEOPT)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	tc.write(append(b, data...))
}

func (tc *testClient) optReply() optRep {
	tc.t.Helper()
	var h [20]byte
	tc.full(h[:])
	if binary.BigEndian.Uint64(h[:]) != NBD_OPTION_REPLY_MAGIC {
		tc.t.Fatalf("bad option reply magic % x", h[:8])
	}
	r := optRep{Opt: binary.BigEndian.Uint32(h[8:]), Type: binary.BigEndian.Uint32(h[12:])}
	r.Data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	tc.full(r.Data)
	return r
}

// opt sends an option and collects replies up to the final one (ACK or error).
func (tc *testClient) opt(opt uint32, data []byte) []optRep {
	tc.t.Helper()
	tc.sendOpt(opt, data)
	var out []optRep
	for {
		r := tc.optReply()
		if r.Opt != opt {
			tc.t.Fatalf("reply for option %d, sent %d", r.Opt, opt)
		}
		out = append(out, r)
		if r.Type == NBD_REP_ACK || r.Type&nbdRepErr != 0 {
			return out
		}
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := appendString32(nil, name)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := appendString32(nil, name)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = appendString32(b, q)
	}
	return b
}

// goExport sends NBD_OPT_GO and returns the size and transmission flags.
func (tc *testClient) goExport(name string) (uint64, uint16) {
	tc.t.Helper()
	reps := tc.opt(NBD_OPT_GO, infoData(name))
	var size uint64
	var flags uint16
	for _, r := range reps {
		if r.Type&nbdRepErr != 0 {
			tc.t.Fatalf("GO %q: error %#x %s", name, r.Type, r.Data)
		}
		if r.Type == NBD_REP_INFO && binary.BigEndian.Uint16(r.Data) == NBD_INFO_EXPORT {
			size, flags = binary.BigEndian.Uint64(r.Data[2:]), binary.BigEndian.Uint16(r.Data[10:])
		}
	}
	return size, flags
}

// reply is one answer to a request: a simple reply, or all chunks of a
// structured one folded together.
type reply struct {
	Err    uint32
	Data   []byte // simple read data, or the read reassembled from chunks
	Chunks []uint16
	Status []uint32 // block status descriptors: length, flags, ...
	Msg    string
}

func (tc *testClient) request(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	tc.id++
	tc.write(append(appendRequest(nil, Request{Flags: flags, Type: typ, Cookie: tc.id, Offset: off, Length: length}), payload...))
	return tc.id
}

// reply reads one reply; readLen is the length of a simple READ's data.
func (tc *testClient) reply(cookie uint64, readOff uint64, readLen int) reply {
	tc.t.Helper()
	var m [4]byte
	tc.full(m[:])
	switch binary.BigEndian.Uint32(m[:]) {
	case NBD_SIMPLE_REPLY_MAGIC:
		var h [12]byte
		tc.full(h[:])
		if c := binary.BigEndian.Uint64(h[4:]); c != cookie {
			tc.t.Fatalf("cookie %d, want %d", c, cookie)
		}
		r := reply{Err: binary.BigEndian.Uint32(h[:])}
		if r.Err == 0 && readLen > 0 {
			r.Data = make([]byte, readLen)
			tc.full(r.Data)
		}
		return r
	case NBD_STRUCTURED_REPLY_MAGIC:
	default:
		tc.t.Fatalf("bad reply magic % x", m)
	}
	r := reply{Data: make([]byte, readLen)}
	for first := true; ; first = false {
		var h [16]byte
		if !first {
			tc.full(m[:])
			if binary.BigEndian.Uint32(m[:]) != NBD_STRUCTURED_REPLY_MAGIC {
				tc.t.Fatalf("bad chunk magic % x", m)
			}
		}
		tc.full(h[:])
		flags, typ := binary.BigEndian.Uint16(h[:]), binary.BigEndian.Uint16(h[2:])
		if c := binary.BigEndian.Uint64(h[4:]); c != cookie {
			tc.t.Fatalf("cookie %d, want %d", c, cookie)
		}
		p := make([]byte, binary.BigEndian.Uint32(h[12:]))
		tc.full(p)
		r.Chunks = append(r.Chunks, typ)
		switch typ {
		case NBD_REPLY_TYPE_OFFSET_DATA:
			o := binary.BigEndian.Uint64(p) - readOff
			copy(r.Data[o:], p[8:])
		case NBD_REPLY_TYPE_OFFSET_HOLE:
			o := binary.BigEndian.Uint64(p) - readOff
			clear(r.Data[o : o+uint64(binary.BigEndian.Uint32(p[8:]))])
		case NBD_REPLY_TYPE_BLOCK_STATUS:
			if id := binary.BigEndian.Uint32(p); id != metaBaseAllocationID {
				tc.t.Fatalf("context id %d", id)
			}
			for i := 4; i+8 <= len(p); i += 8 {
				r.Status = append(r.Status, binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:]))
			}
		case NBD_REPLY_TYPE_ERROR:
			r.Err = binary.BigEndian.Uint32(p)
			r.Msg = string(p[6:])
		case NBD_REPLY_TYPE_NONE:
		default:
			tc.t.Fatalf("unexpected chunk type %d", typ)
		}
		if flags&NBD_REPLY_FLAG_DONE != 0 {
			return r
		}
	}
}

func (r reply) String() string { return fmt.Sprintf("err=%d chunks=%v msg=%q", r.Err, r.Chunks, r.Msg) }
