package xs_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// FuzzReplies plays a hostile daemon: each request the client sends is
// answered from the fuzz input, either with a reply of a chosen type and
// payload or with raw bytes (bad frames, stray events, replies to nothing).
// Every call must return, and nothing may panic or leak a goroutine.
func FuzzReplies(f *testing.F) {
	f.Add([]byte("\x01\x05\x00value"))
	f.Add([]byte("\x01\x04\x00a\x00b\x00\x03\x07\x00ENOENT\x00"))
	f.Add([]byte("\x03\x06\x00E2BIG\x00\x01\x08\x001\x00a\x00b\x00\x00"))
	f.Add([]byte("\x01\x03\x00b0\x00\x01\x02\x004\x00\x01\x03\x00OK\x00"))
	f.Add([]byte("\x00\x20\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00/a\x00t\x00\x01\x03\x00OK\x00"))
	f.Add([]byte("\x00\x10\x02\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		c := xs.New(cli)
		go daemon(srv, data)

		c.Read("/a")
		if names, err := c.Directory("/d"); err == nil {
			for _, n := range names {
				if strings.IndexByte(n, 0) >= 0 {
					t.Fatalf("name with NUL: %q", n)
				}
			}
		}
		c.GetPerms("/p")
		if tx, err := c.TransactionStart(); err == nil {
			if tx.ID() == 0 {
				t.Fatal("transaction id 0 accepted")
			}
			tx.Commit()
		}
		if w, err := c.Watch("/a", "t"); err == nil {
			go func() {
				for range w.Events() {
				}
			}()
		}
		c.IsDomainIntroduced(1)
		c.GetDomainPath(1)
		c.Control("print", "x")
		c.Close()
	})
}

// daemon answers each request from data until data runs out, then hangs up.
// When the client sends nothing for a while (raw bytes left it waiting for
// the rest of a frame, say), the next answer goes to the last request again:
// each round consumes input, so the exchange always ends.
func daemon(srv net.Conn, data []byte) {
	defer srv.Close()
	take := func(n int) []byte {
		n = min(n, len(data))
		b := data[:n]
		data = data[n:]
		return b
	}
	var req wire.Msg
	r := bufio.NewReader(srv)
	for len(data) > 0 {
		srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := r.Peek(wire.HeaderSize); err == nil {
			if req, err = wire.Read(r); err != nil {
				return
			}
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		mode := take(1)[0]
		n := 0
		for _, b := range take(2) {
			n = n<<8 | int(b)
		}
		switch mode % 4 {
		case 0: // raw bytes
			if _, err := srv.Write(take(n)); err != nil {
				return
			}
		case 1, 2: // a reply of the request's type
			m := wire.Reply(req, take(n%(abi.XENSTORE_PAYLOAD_MAX+1)))
			if m.Write(srv) != nil {
				return
			}
		case 3: // an error reply
			m := wire.Msg{Type: abi.XS_ERROR, ReqID: req.ReqID, TxID: req.TxID, Payload: take(n % 64)}
			if m.Write(srv) != nil {
				return
			}
		}
	}
}
