package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/faultnet"
)

// linkSide is a Config.Link for tests. Hellos:
//
//	"conn"  accept; the net.Conn goes to conns
//	"file"  accept; LinkFile inside Link, the file goes to files
//	"early" accept after writing "early" on the link inside Link
//	other   refuse with ENOENT
type linkSide struct {
	m     *Mesh
	conns chan net.Conn
	files chan *os.File
	hello chan string
}

func newLinkSide() *linkSide {
	return &linkSide{conns: make(chan net.Conn, 4), files: make(chan *os.File, 4), hello: make(chan string, 4)}
}

func (l *linkSide) link(from string, hello []byte, c net.Conn) error {
	l.hello <- from + ":" + string(hello)
	switch string(hello) {
	case "conn":
		l.conns <- c
	case "file":
		f, err := l.m.LinkFile(c)
		if err != nil {
			return err
		}
		l.files <- f
	case "early":
		if _, err := c.Write([]byte("early")); err != nil {
			return err
		}
		l.conns <- c
	default:
		return syscall.ENOENT
	}
	return nil
}

// linkPair starts meshes A and B (with faults f, which may be nil); B
// accepts links as linkSide says.
func linkPair(t *testing.T, f *faultnet.Faults) (a, b *node, bl *linkSide) {
	tn := newTestNet(t)
	bl = newLinkSide()
	a = tn.start("A", "", func(c *Config, _ *tunables) { c.Faults = f })
	b = tn.start("B", "", func(c *Config, _ *tunables) { c.Faults, c.Link = f, bl.link })
	bl.m = b.Mesh
	return a, b, bl
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLinkCarriesBytes(t *testing.T) {
	a, _, bl := linkPair(t, nil)
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("conn"))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if h := <-bl.hello; h != "A:conn" {
		t.Fatalf("Link saw %q", h)
	}
	cb := <-bl.conns
	defer cb.Close()
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	go ca.Write(big)
	if got := readN(t, cb, len(big)); got != string(big) {
		t.Fatal("A -> B bytes differ")
	}
	cb.Write([]byte("pong"))
	if got := readN(t, ca, 4); got != "pong" {
		t.Fatalf("B -> A: %q", got)
	}
	ca.Close()
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cb.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after A closed: %d, %v; want EOF", n, err)
	}
}

// TestLinkVerdictFirst: bytes the acceptor writes inside Link follow the
// verdict, and DialLink leaves them in the connection.
func TestLinkVerdictFirst(t *testing.T) {
	a, _, bl := linkPair(t, nil)
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("early"))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	defer (<-bl.conns).Close()
	if got := readN(t, ca, 5); got != "early" {
		t.Fatalf("read %q after the verdict", got)
	}
}

func TestLinkRefused(t *testing.T) {
	a, b, _ := linkPair(t, nil)
	_, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("nope"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("got %v, want ENOENT", err)
	}
	// No Link at all refuses everything.
	_, err = b.DialLink(ctxTimeout(t, 5*time.Second), "A", nil)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("got %v, want ECONNREFUSED", err)
	}
	for _, tc := range []struct {
		host  string
		hello []byte
	}{{"", nil}, {"A", nil}, {"B", make([]byte, MaxHello+1)}} {
		if _, err := a.DialLink(ctxTimeout(t, time.Second), tc.host, tc.hello); err == nil {
			t.Errorf("DialLink(%q, %d bytes) succeeded", tc.host, len(tc.hello))
		}
	}
	if d := a.Stats().Dials; d != 1 {
		t.Errorf("%d dials; the bad calls must fail before dialing", d)
	}
}

// TestDialLinkContext: a dial to a cut host ends with the caller's context.
func TestDialLinkContext(t *testing.T) {
	f := faultnet.New()
	a, b, _ := linkPair(t, f)
	f.Block(b.Addr().String())
	start := time.Now()
	_, err := a.DialLink(ctxTimeout(t, 100*time.Millisecond), "B", []byte("conn"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}

func fdInt(t *testing.T, f *os.File, get func(fd int) (int, error)) int {
	t.Helper()
	v, err := get(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fdWrite and fdRead use raw syscalls, as a domain process would.
func fdWrite(t *testing.T, f *os.File, s string) {
	t.Helper()
	if n, err := unix.Write(int(f.Fd()), []byte(s)); err != nil || n != len(s) {
		t.Fatalf("write: %d, %v", n, err)
	}
}

// fdReadable waits up to d for f to become readable.
func fdReadable(t *testing.T, f *os.File, d time.Duration) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
}

func fdRead(t *testing.T, f *os.File, n int) string {
	t.Helper()
	var got []byte
	buf := make([]byte, n)
	for len(got) < n {
		if !fdReadable(t, f, 5*time.Second) {
			t.Fatalf("read %q of %d bytes, then nothing", got, n)
		}
		k, err := unix.Read(int(f.Fd()), buf[:n-len(got)])
		if err != nil || k == 0 {
			t.Fatalf("read: %d, %v after %q", k, err, got)
		}
		got = append(got, buf[:k]...)
	}
	return string(got)
}

// TestLinkFileSocket: without faults, LinkFile hands out the TCP socket
// itself, blocking, close-on-exec, with TCP_NODELAY.
func TestLinkFileSocket(t *testing.T) {
	a, _, bl := linkPair(t, nil)
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("file"))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := a.LinkFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb := <-bl.files
	defer fb.Close()
	for _, f := range []*os.File{fa, fb} {
		if fl := fdInt(t, f, func(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0) }); fl&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: O_NONBLOCK set", f.Name())
		}
		if fl := fdInt(t, f, func(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0) }); fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: not close-on-exec", f.Name())
		}
		if v := fdInt(t, f, func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY) }); v != 1 {
			t.Errorf("%s: TCP_NODELAY %d", f.Name(), v)
		}
	}
	if _, err := ca.Write([]byte("x")); err == nil {
		t.Error("LinkFile left the mesh's copy open")
	}
	fdWrite(t, fa, "ping")
	if got := fdRead(t, fb, 4); got != "ping" {
		t.Fatalf("B read %q", got)
	}
	fdWrite(t, fb, "pong")
	if got := fdRead(t, fa, 4); got != "pong" {
		t.Fatalf("A read %q", got)
	}
	// Closing the only copy ends the link: B reads EOF.
	fa.Close()
	if !fdReadable(t, fb, 5*time.Second) {
		t.Fatal("B never saw the close")
	}
	if n, err := unix.Read(int(fb.Fd()), make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("after close: %d, %v; want EOF", n, err)
	}
}

// TestLinkFileRelay: with a fault set when the link is made, LinkFile
// hands out a unix socket relayed through the fault hook: a delay shows
// in the round trip and a cut stops the traffic both ways.
func TestLinkFileRelay(t *testing.T) {
	f := faultnet.New()
	a, b, bl := linkPair(t, f)
	f.SetDelay(20*time.Millisecond, 0) // each side's egress: 20 ms each way
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("file"))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := a.LinkFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb := <-bl.files
	defer fb.Close()
	for _, f := range []*os.File{fa, fb} {
		if d := fdInt(t, f, func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN) }); d != unix.AF_UNIX {
			t.Fatalf("%s: socket domain %d, want AF_UNIX", f.Name(), d)
		}
		if fl := fdInt(t, f, func(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0) }); fl&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: O_NONBLOCK set", f.Name())
		}
	}
	roundTrip := func() time.Duration {
		start := time.Now()
		fdWrite(t, fa, "ping")
		if got := fdRead(t, fb, 4); got != "ping" {
			t.Fatalf("B read %q", got)
		}
		fdWrite(t, fb, "pong")
		if got := fdRead(t, fa, 4); got != "pong" {
			t.Fatalf("A read %q", got)
		}
		return time.Since(start)
	}
	if d := roundTrip(); d < 40*time.Millisecond {
		t.Fatalf("round trip %v with a 20 ms one-way delay", d)
	}

	f.Reset()
	roundTrip()
	f.Block(b.Addr().String()) // cuts A's end of the link, both ways
	fdWrite(t, fa, "lost")
	fdWrite(t, fb, "lost")
	if fdReadable(t, fb, 200*time.Millisecond) || fdReadable(t, fa, 200*time.Millisecond) {
		t.Fatal("bytes crossed a cut link")
	}

	// Closing the domain's end ends the relay on that side.
	fa.Close()
	waitFor(t, "A's relay to end", func() bool { a.mu.Lock(); defer a.mu.Unlock(); return len(a.relays) == 0 })
}

// TestLinkFileNoFaultSet: a mesh with a fault hook but no fault set when
// the link is made hands out the TCP socket itself, as in production.
func TestLinkFileNoFaultSet(t *testing.T) {
	a, _, bl := linkPair(t, faultnet.New())
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("file"))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := a.LinkFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb := <-bl.files
	defer fb.Close()
	for _, f := range []*os.File{fa, fb} {
		if d := fdInt(t, f, func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN) }); d != unix.AF_INET {
			t.Fatalf("%s: socket domain %d, want AF_INET", f.Name(), d)
		}
	}
	fdWrite(t, fa, "ping")
	if got := fdRead(t, fb, 4); got != "ping" {
		t.Fatalf("B read %q", got)
	}
}

// TestRelayEndsWithPeer: when the far end of a relayed link closes, the
// relay ends and the domain's end reads EOF.
func TestRelayEndsWithPeer(t *testing.T) {
	f := faultnet.New()
	f.SetDelay(time.Millisecond, 0)
	a, _, bl := linkPair(t, f)
	ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("conn"))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := a.LinkFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	cb := <-bl.conns
	cb.Write([]byte("bye"))
	cb.Close()
	if got := fdRead(t, fa, 3); got != "bye" {
		t.Fatalf("read %q", got)
	}
	if !fdReadable(t, fa, 5*time.Second) {
		t.Fatal("no EOF")
	}
	if n, err := unix.Read(int(fa.Fd()), make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("%d, %v; want EOF", n, err)
	}
	waitFor(t, "A's relay to end", func() bool { a.mu.Lock(); defer a.mu.Unlock(); return len(a.relays) == 0 })
}
