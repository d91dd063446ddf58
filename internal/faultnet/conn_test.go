package faultnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns two ends of a loopback TCP stream; the dialing end is
// wrapped with f (peer = the listener's address).
func tcpPair(t *testing.T, f *Faults) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := f.Dial((&net.Dialer{}).DialContext)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestDelayKeepsOrder writes numbered chunks through a jittery delay and
// checks they arrive complete, in order, and not before the minimum delay.
func TestDelayKeepsOrder(t *testing.T) {
	f := New()
	f.SetDelay(20*time.Millisecond, 10*time.Millisecond)
	a, b := tcpPair(t, f)

	const n = 2000
	start := time.Now()
	go func() {
		var buf [4]byte
		for i := range uint32(n) {
			binary.BigEndian.PutUint32(buf[:], i)
			if _, err := a.Write(buf[:]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf [4]byte
	for i := range uint32(n) {
		if _, err := io.ReadFull(b, buf[:]); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if i == 0 {
			if d := time.Since(start); d < 10*time.Millisecond {
				t.Fatalf("first chunk after %v, want >= 10ms", d)
			}
		}
		if got := binary.BigEndian.Uint32(buf[:]); got != i {
			t.Fatalf("chunk %d arrived as %d", i, got)
		}
	}
}

// TestDelaySwitchedOnAndOff changes the delay on an open stream: order
// holds across the switch, and the delay applies only while set.
func TestDelaySwitchedOnAndOff(t *testing.T) {
	f := New()
	a, b := tcpPair(t, f)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1)

	roundTrip := func(c byte) time.Duration {
		start := time.Now()
		if _, err := a.Write([]byte{c}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, buf); err != nil || buf[0] != c {
			t.Fatalf("read %q, %v; want %q", buf, err, c)
		}
		return time.Since(start)
	}
	roundTrip('a')
	f.SetDelay(50*time.Millisecond, 0)
	if d := roundTrip('b'); d < 50*time.Millisecond {
		t.Fatalf("delayed write took %v", d)
	}
	// Switch off while a write is held back: the next one must not overtake it.
	if _, err := a.Write([]byte{'c'}); err != nil {
		t.Fatal(err)
	}
	f.Reset()
	if _, err := a.Write([]byte{'d'}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "cd" {
		t.Fatalf("read %q, %v; want \"cd\"", got, err)
	}
}

// TestCloseDeliversHeldBytes: Close with delayed bytes still queued sends
// them before closing, like close(2) on a socket with data in flight.
func TestCloseDeliversHeldBytes(t *testing.T) {
	f := New()
	f.SetDelay(30*time.Millisecond, 0)
	a, b := tcpPair(t, f)
	msg := bytes.Repeat([]byte("x"), 100000)
	if _, err := a.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(msg); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v; want %d then EOF", len(got), err, len(msg))
	}
}

// TestCloseUnblocksRead: a Read blocked on a conn with held bytes returns
// when Close is called.
func TestCloseUnblocksRead(t *testing.T) {
	f := New()
	f.SetDelay(time.Second, 0)
	a, _ := tcpPair(t, f)
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	a.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read: %v", err)
	}
}

// TestDelayedWriteErrorIsReported: a held-back write that fails makes a
// later Write fail.
func TestDelayedWriteErrorIsReported(t *testing.T) {
	f := New()
	f.SetDelay(time.Millisecond, 0)
	p, q := net.Pipe()
	c := f.Conn(p, "pipe")
	q.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write([]byte("x")); err != nil {
			if !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("Write: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("write error never reported")
		}
		time.Sleep(time.Millisecond)
	}
	c.Close()
}

// TestCutStream: blocking the peer cuts an open stream in both directions,
// for good; a new stream after Unblock works.
func TestCutStream(t *testing.T) {
	f := New()
	a, b := tcpPair(t, f)
	if _, err := a.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}

	f.Block("127.0.0.1")
	if n, err := a.Write([]byte("2")); n != 1 || err != nil {
		t.Fatalf("Write on a cut stream = %d, %v; want it swallowed", n, err)
	}
	if _, err := b.Write([]byte("3")); err != nil {
		t.Fatal(err)
	}
	f.Unblock("127.0.0.1")
	// Still cut after Unblock: neither side sees a byte.
	a.Write([]byte("4"))
	b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := b.Read(buf); !os.IsTimeout(err) {
		t.Fatalf("peer read %d bytes (%q), %v; want timeout", n, buf[:n], err)
	}
	a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := a.Read(buf); !os.IsTimeout(err) {
		t.Fatalf("cut end read %d bytes (%q), %v; want timeout", n, buf[:n], err)
	}

	c, d := tcpPair(t, f)
	if _, err := c.Write([]byte("5")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(d, buf); err != nil || buf[0] != '5' {
		t.Fatalf("new stream: %q, %v", buf, err)
	}
}

func TestDialBlocked(t *testing.T) {
	f := New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f.Block(ln.Addr().String())

	dial := f.Dial((&net.Dialer{}).DialContext)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := dial(ctx, "tcp", ln.Addr().String()); !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial: %v", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("blocked dial failed after %v, want it to hang until its deadline", d)
	}
	if _, err := dial(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial without deadline: %v", err)
	}

	dt := f.DialTimeout(func(addr string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout("tcp", addr, timeout)
	})
	start = time.Now()
	if _, err := dt(ln.Addr().String(), 30*time.Millisecond); !errors.Is(err, ErrBlocked) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("DialTimeout: %v after %v", err, time.Since(start))
	}
	f.Reset()
	c, err := dt(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestListenerCutsBlockedHost: accepted streams know their peer, so a
// blocked host's streams are cut on the accepting side too.
func TestListenerCutsBlockedHost(t *testing.T) {
	f := New()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := f.Listener(raw)
	defer ln.Close()

	accept := func() (client, server net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}
	client, server := accept()
	if _, err := client.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}

	f.Block("127.0.0.1")
	client, server = accept()
	client.Write([]byte("b"))
	server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := server.Read(buf); !os.IsTimeout(err) {
		t.Fatalf("read %d bytes from a blocked host, %v", n, err)
	}
	// A cut stream still ends when its peer closes it, so nothing leaks.
	client.Close()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(buf); err != io.EOF {
		t.Fatalf("read after peer close: %v, want EOF", err)
	}
}
