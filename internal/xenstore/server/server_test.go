package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"shi/internal/abi"
	"shi/internal/xenstore"
	"shi/internal/xenstore/wire"
)

type fixture struct {
	t     *testing.T
	path  string
	local *Local
	srv   *Server
}

func start(t *testing.T, q xenstore.Quota) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xs.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, path: path, local: NewLocal(q)}
	f.srv = New(Config{Backend: f.local, Quota: q})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) dial() (net.Conn, *bufio.Reader) {
	c, err := net.Dial("unix", f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, m wire.Msg) wire.Msg {
	t.Helper()
	if err := m.Write(c); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		got, err := wire.Read(r)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != abi.XS_WATCH_EVENT {
			return got
		}
	}
}

func errName(m wire.Msg) string {
	if m.Type != abi.XS_ERROR {
		return "OK"
	}
	return string(m.Payload[:len(m.Payload)-1])
}

func TestBadInputGetsErrorReplies(t *testing.T) {
	f := start(t, xenstore.DefaultQuota())
	c, r := f.dial()
	for _, tc := range []struct {
		name string
		m    wire.Msg
		want string
	}{
		{"missing NUL", wire.Msg{Type: abi.XS_READ, Payload: []byte("/a")}, "EINVAL"},
		{"bad path", wire.Msg{Type: abi.XS_WRITE, Payload: []byte("/a//b\x00v")}, "EINVAL"},
		{"unknown type", wire.Msg{Type: 1234}, "ENOSYS"},
		{"removed type", wire.Msg{Type: 20}, "ENOSYS"},
		{"unknown tx", wire.Msg{Type: abi.XS_READ, TxID: 77, Payload: []byte("/\x00")}, "ENOENT"},
		{"end without tx", wire.Msg{Type: abi.XS_TRANSACTION_END, Payload: []byte("T\x00")}, "ENOENT"},
		{"good write", wire.Msg{Type: abi.XS_WRITE, ReqID: 9, Payload: []byte("/a\x00v")}, "OK"},
	} {
		got := roundTrip(t, c, r, tc.m)
		if errName(got) != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
		if got.ReqID != tc.m.ReqID || got.TxID != tc.m.TxID {
			t.Errorf("%s: ids not echoed: %s", tc.name, got)
		}
	}
}

// A header announcing more than XENSTORE_PAYLOAD_MAX closes that
// connection and nothing else: the tree is unchanged, others are served.
func TestOversizedHeaderDropsOnlyThatConnection(t *testing.T) {
	f := start(t, xenstore.DefaultQuota())
	good, gr := f.dial()
	before := f.local.State().Dump("/")
	for _, raw := range [][]byte{
		hdr(abi.XS_WRITE, abi.XENSTORE_PAYLOAD_MAX+1),
		hdr(abi.XS_WRITE, 0xffffffff),
		append(hdr(abi.XS_WRITE, 100), "/trunc\x00"...), // closed mid-message
		{1, 2, 3}, // closed mid-header
	} {
		bad, br := f.dial()
		bad.Write(raw)
		if len(raw) != 16 || binary.LittleEndian.Uint32(raw[12:]) <= abi.XENSTORE_PAYLOAD_MAX {
			bad.(*net.UnixConn).CloseWrite()
		}
		bad.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(br); err != nil {
			t.Fatalf("connection not closed cleanly: %v", err)
		}
	}
	if got := roundTrip(t, good, gr, wire.Msg{Type: abi.XS_READ, Payload: []byte("/\x00")}); got.Type != abi.XS_READ {
		t.Fatalf("good connection: %s", got)
	}
	if after := f.local.State().Dump("/"); after != before {
		t.Fatalf("tree changed:\n%s", after)
	}
	if f.srv.Stats().ProtocolErrors.Load() < 3 {
		t.Errorf("protocol errors not counted: %d", f.srv.Stats().ProtocolErrors.Load())
	}
}

func hdr(typ, n uint32) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint32(b[12:], n)
	return b
}

// A watcher that never reads must not block writers, and its queue stays
// bounded: events beyond the quota are dropped and counted.
func TestSilentWatcherIsBounded(t *testing.T) {
	q := xenstore.DefaultQuota()
	q.MaxQueuedEvents = 50
	f := start(t, q)
	silent, sr := f.dial()
	roundTrip(t, silent, sr, wire.Msg{Type: abi.XS_WATCH, Payload: wire.JoinStrings("/", "tok")})
	w, wr := f.dial()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3000; i++ {
			roundTrip(t, w, wr, wire.Msg{Type: abi.XS_WRITE, Payload: []byte("/spam\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")})
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writer blocked by a watcher that does not read")
	}
	silent.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Stats().DroppedEvents.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.srv.Stats().DroppedEvents.Load() == 0 {
		t.Fatal("no events dropped: the silent watcher's queue was unbounded")
	}
}

// A client that pipelines requests without reading replies stops being
// read once its socket is full and MaxOutstanding replies are queued;
// once it reads, it gets every reply in order.
func TestPipelinedClientIsThrottled(t *testing.T) {
	f := start(t, xenstore.DefaultQuota())
	c, r := f.dial()
	big := make([]byte, 4000)
	roundTrip(t, c, r, wire.Msg{Type: abi.XS_WRITE, Payload: append([]byte("/big\x00"), big...)})
	base := f.srv.Stats().Requests.Load()
	const n = 2000
	go func() {
		var buf []byte
		for i := 0; i < n; i++ {
			m := wire.Msg{Type: abi.XS_READ, ReqID: uint32(i), Payload: []byte("/big\x00")}
			buf = m.Append(buf)
		}
		c.Write(buf)
	}()
	// Wait until the server stops making progress, then check it stopped early.
	last := uint64(0)
	for stable := 0; stable < 5; {
		time.Sleep(20 * time.Millisecond)
		cur := f.srv.Stats().Requests.Load() - base
		if cur == last && cur > 0 {
			stable++
		} else {
			stable = 0
		}
		last = cur
	}
	if last >= n/2 {
		t.Fatalf("server handled %d of %d requests for a client that reads nothing", last, n)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		m, err := wire.Read(r)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if m.ReqID != uint32(i) || len(m.Payload) != len(big) {
			t.Fatalf("reply %d: %s", i, m)
		}
	}
}
