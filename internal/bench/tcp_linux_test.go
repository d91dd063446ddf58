package bench

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The TCP baselines work at all, on loopback, with and without the
// delay: the server runs in a child process, as on the other test host.
func TestTCPBaselines(t *testing.T) {
	addr, stop, err := StartTCPServer()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		rt, err := TCPPingPong(addr, 16, 50, 3, delay)
		if err != nil {
			t.Fatalf("ping, delay %v: %v", delay, err)
		}
		if len(rt) != 3 {
			t.Fatalf("ping, delay %v: %d runs", delay, len(rt))
		}
		for _, d := range rt {
			// Not a timing assertion: a delayed round trip holds back two
			// writes, so it cannot be shorter than both delays.
			if d <= 0 || d < 2*delay {
				t.Errorf("ping, delay %v: round trip %v", delay, d)
			}
		}
		bps, err := TCPStream(addr, 4<<20+123, 64<<10, 2, delay)
		if err != nil {
			t.Fatalf("stream, delay %v: %v", delay, err)
		}
		if len(bps) != 2 || bps[0] <= 0 {
			t.Fatalf("stream, delay %v: %v", delay, bps)
		}
		t.Logf("delay %v: %s; %s", delay, MicrosFigure(FigTCPRoundTrip, rt).Line(), GBFigure(FigTCPStream, bps).Line())
	}
}

// A server in this process: what is not hot (streams, delayed pings)
// can share it; Close ends connections that are still open.
func TestTCPServerClose(t *testing.T) {
	s, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(nil) }()
	if _, err := TCPPingPong(s.Addr(), 8, 10, 1, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := TCPStream(s.Addr(), 1<<20, 4096, 1, 0); err != nil {
		t.Fatal(err)
	}
	// A client that says hello and then nothing.
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(tcpHello{mode: tcpStream, size: 4096, runs: 1, bytes: 1 << 20}.marshal()); err != nil {
		t.Fatal(err)
	}
	var ready [1]byte
	if _, err := io.ReadFull(c, ready[:]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for an idle connection after 10 s")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n, err := c.Read(ready[:]); err != io.EOF {
		t.Fatalf("the idle connection still open after Close: %d, %v", n, err)
	}
}

func TestTCPHello(t *testing.T) {
	h := tcpHello{mode: tcpStream, delay: 1500 * time.Microsecond, size: 65536, runs: 3, bytes: 1 << 30}
	got, err := parseTCPHello(h.marshal())
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, h)
	}
	bad := map[string]tcpHello{
		"mode":        {mode: 9, size: 16},
		"size 0":      {mode: tcpPing},
		"size huge":   {mode: tcpPing, size: maxTCPSize + 1},
		"no runs":     {mode: tcpStream, size: 16, bytes: 10},
		"no bytes":    {mode: tcpStream, size: 16, runs: 1},
		"bad magic":   {},
		"short hello": {},
	}
	for name, h := range bad {
		b := h.marshal()
		switch name {
		case "bad magic":
			b[0] = 'x'
		case "short hello":
			b = b[:20]
		}
		if _, err := parseTCPHello(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A connection that is not a benchtcp client ends with an error, and
// the server goes on.
func TestTCPServerRefusesJunk(t *testing.T) {
	s, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	served := make(chan error, 1)
	go func() { served <- s.Serve(&lockedWriter{w: &log}) }()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(strings.Repeat("GET / HTTP/1.0\r\n", 4)))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server answered junk")
	}
	c.Close()
	if _, err := TCPStream(s.Addr(), 1<<16, 4096, 1, 0); err != nil {
		t.Fatalf("after junk: %v", err)
	}
	s.Close()
	<-served
	if !strings.Contains(log.String(), "not a benchtcp hello") {
		t.Errorf("log %q", log.String())
	}
}

func TestListenTCPBadAddress(t *testing.T) {
	if _, err := ListenTCP("127.0.0.1:99999"); err == nil {
		t.Fatal("listened on port 99999")
	}
	if _, err := TCPPingPong("127.0.0.1:1", 16, 1, 1, 0); err == nil || !strings.Contains(err.Error(), unix.ECONNREFUSED.Error()) {
		t.Fatalf("ping to a closed port: %v", err)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
