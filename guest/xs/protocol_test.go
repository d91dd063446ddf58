package xs_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// rawPair returns a client and the daemon's end of its connection, for
// tests that play the daemon byte by byte.
func rawPair(t *testing.T) (*xs.Client, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	c := xs.New(a)
	t.Cleanup(func() { c.Close(); b.Close() })
	return c, b
}

func send(srv net.Conn, m wire.Msg) { m.Write(srv) }

func readReq(t *testing.T, srv net.Conn) wire.Msg {
	t.Helper()
	m, err := wire.Read(srv)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type outcome struct {
	v   []byte
	err error
}

func goRead(c *xs.Client, path string) chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		v, err := c.Read(path)
		ch <- outcome{v, err}
	}()
	return ch
}

// Replies are matched by req_id, not by order.
func TestRepliesOutOfOrder(t *testing.T) {
	c, srv := rawPair(t)
	a := goRead(c, "/a")
	ma := readReq(t, srv)
	b := goRead(c, "/b")
	mb := readReq(t, srv)
	if ma.ReqID == mb.ReqID {
		t.Fatalf("two requests in flight share req_id %d", ma.ReqID)
	}
	send(srv, wire.Reply(mb, []byte("B")))
	send(srv, wire.WatchEvent("/unwatched", "nobody")) // dropped: no such watch
	send(srv, wire.Msg{Type: abi.XS_WATCH_EVENT, Payload: []byte("malformed")})
	send(srv, wire.Reply(ma, []byte("A")))
	if r := <-a; string(r.v) != "A" || r.err != nil {
		t.Errorf("a = %q, %v", r.v, r.err)
	}
	if r := <-b; string(r.v) != "B" || r.err != nil {
		t.Errorf("b = %q, %v", r.v, r.err)
	}
}

func TestErrorNames(t *testing.T) {
	c, srv := rawPair(t)
	for _, tc := range []struct {
		payload string
		want    syscall.Errno
	}{
		{"ENOENT\x00", syscall.ENOENT},
		{"EACCES\x00", syscall.EACCES},
		{"E2BIG", syscall.E2BIG}, // no NUL: the C client terminates it itself
		{"EWHATEVER\x00", syscall.EINVAL},
	} {
		ch := goRead(c, "/x")
		m := readReq(t, srv)
		send(srv, wire.Msg{Type: abi.XS_ERROR, ReqID: m.ReqID, Payload: []byte(tc.payload)})
		if r := <-ch; r.err != tc.want {
			t.Errorf("error %q = %v, want %v", tc.payload, r.err, tc.want)
		}
	}
}

func TestProtocolViolations(t *testing.T) {
	for name, bad := range map[string]func(req wire.Msg) []byte{
		"unknown req_id": func(req wire.Msg) []byte {
			m := wire.Msg{Type: req.Type, ReqID: req.ReqID + 100}
			return m.Bytes()
		},
		"wrong type": func(req wire.Msg) []byte {
			m := wire.Msg{Type: abi.XS_WRITE, ReqID: req.ReqID, Payload: wire.OK}
			return m.Bytes()
		},
		"length over the limit": func(req wire.Msg) []byte {
			m := wire.Msg{Type: req.Type, ReqID: req.ReqID}
			b := m.Bytes()
			b[12], b[13] = 0xff, 0xff
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, srv := rawPair(t)
			ch := goRead(c, "/x")
			req := readReq(t, srv)
			srv.Write(bad(req))
			r := <-ch
			if !errors.Is(r.err, xs.ErrProtocol) {
				t.Fatalf("Read = %q, %v; want ErrProtocol", r.v, r.err)
			}
			if !errors.Is(c.Err(), xs.ErrProtocol) {
				t.Fatalf("connection not ended: %v", c.Err())
			}
			if _, err := c.Read("/x"); !errors.Is(err, xs.ErrProtocol) {
				t.Fatalf("later Read = %v", err)
			}
		})
	}
}

func TestHangUpMidMessage(t *testing.T) {
	c, srv := rawPair(t)
	ch := goRead(c, "/x")
	req := readReq(t, srv)
	m := wire.Reply(req, []byte("value"))
	b := m.Bytes()
	srv.Write(b[:len(b)-2])
	srv.Close()
	if r := <-ch; !errors.Is(r.err, xs.ErrProtocol) {
		t.Fatalf("Read = %v, want ErrProtocol (truncated)", r.err)
	}
}

// A list that changes while it is read in parts is read again from the start.
func TestDirectoryPartRestart(t *testing.T) {
	c, srv := rawPair(t)
	done := make(chan outcome, 1)
	go func() {
		names, err := c.Directory("/d")
		done <- outcome{[]byte(join(names)), err}
	}()
	reply := func(payload string) wire.Msg {
		m := readReq(t, srv)
		if m.Type == abi.XS_DIRECTORY {
			send(srv, wire.ErrorReply(m, syscall.E2BIG))
			m = readReq(t, srv)
		}
		send(srv, wire.Reply(m, []byte(payload)))
		return m
	}
	reply("1\x00a\x00b\x00")
	if m := reply("2\x00c\x00"); string(m.Payload) != "/d\x004\x00" {
		t.Fatalf("second part asked %q", m.Payload)
	}
	reply("2\x00x\x00")          // restart from 0 under generation 2
	reply("2\x00y\x00z\x00\x00") // end marker
	r := <-done
	if r.err != nil || string(r.v) != "x,y,z" {
		t.Fatalf("Directory = %q, %v", r.v, r.err)
	}
}

func TestDirectoryPartNoProgress(t *testing.T) {
	c, srv := rawPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Directory("/d")
		done <- err
	}()
	m := readReq(t, srv)
	send(srv, wire.ErrorReply(m, syscall.E2BIG))
	m = readReq(t, srv)
	send(srv, wire.Reply(m, []byte("1\x00"))) // no names and no end marker
	if err := <-done; !errors.Is(err, xs.ErrProtocol) {
		t.Fatalf("Directory = %v, want ErrProtocol", err)
	}
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
