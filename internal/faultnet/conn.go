package faultnet

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxQueued bounds the bytes a delayed stream holds back; Write blocks
// beyond it, as it would on a full socket buffer.
const maxQueued = 4 << 20

// Conn wraps a stream connection to or from peer ("host:port"). A nil f
// returns c itself. The wrapper checks the faults on every call, so faults
// set later apply to streams that are already open.
func (f *Faults) Conn(c net.Conn, peer string) net.Conn {
	if f == nil {
		return c
	}
	fc := &conn{Conn: c, f: f, peer: peer}
	fc.space = sync.NewCond(&fc.mu)
	return fc
}

// conn delays writes through a queue drained by one sender goroutine,
// started only while something is queued. Writes that need no delay go
// straight through when nothing is queued, so byte order always holds.
type conn struct {
	net.Conn
	f    *Faults
	peer string

	cut    atomic.Bool // sticky: the peer was seen blocked
	closed atomic.Bool

	// mu guards every field below it.
	mu      sync.Mutex
	space   *sync.Cond // signalled when queued shrinks, or on close or error
	queue   []chunk
	queued  int       // bytes in queue
	busy    bool      // the sender goroutine is running
	lastDue time.Time // due time of the newest chunk; later chunks never go earlier
	err     error     // sticky: a delayed write failed
	// closeAfterDrain is set by Close while the sender runs; the sender then
	// closes the underlying conn when the queue is empty.
	closeAfterDrain bool
}

type chunk struct {
	due time.Time
	b   []byte
}

// NetConn returns the wrapped connection, for a caller that hands the
// socket itself to another process while no fault is set (it then
// bypasses the hook for good).
func (c *conn) NetConn() net.Conn { return c.Conn }

// isCut reports whether the stream is cut, making the cut sticky.
func (c *conn) isCut() bool {
	if c.cut.Load() {
		return true
	}
	if c.f.Blocked(c.peer) {
		c.cut.Store(true)
		return true
	}
	return false
}

// Read implements net.Conn.Read. On a cut stream, bytes that arrive are
// thrown away and Read waits for more, until an error (deadline, close).
func (c *conn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if err != nil && c.closed.Load() {
			return 0, net.ErrClosed
		}
		if c.isCut() {
			if err != nil {
				return 0, err
			}
			continue
		}
		return n, err
	}
}

// Write implements net.Conn.Write. A delayed write returns at once, like a
// write into a socket buffer; an error of the delayed write is returned by a
// later Write.
func (c *conn) Write(b []byte) (int, error) {
	if c.isCut() {
		return len(b), nil
	}
	d := c.f.load().sample()
	c.mu.Lock()
	for {
		if c.closed.Load() {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		if c.queued < maxQueued {
			break
		}
		c.space.Wait()
	}
	if d == 0 && !c.busy {
		c.mu.Unlock()
		return c.Conn.Write(b)
	}
	due := time.Now().Add(d)
	if due.Before(c.lastDue) {
		due = c.lastDue
	}
	c.lastDue = due
	c.queue = append(c.queue, chunk{due: due, b: bytes.Clone(b)})
	c.queued += len(b)
	if !c.busy {
		c.busy = true
		go c.send()
	}
	c.mu.Unlock()
	return len(b), nil
}

// send writes queued chunks when they are due, then exits.
func (c *conn) send() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.err != nil {
			c.queue, c.queued = nil, 0
			c.busy = false
			closeNow := c.closeAfterDrain
			c.space.Broadcast()
			c.mu.Unlock()
			if closeNow {
				_ = c.Conn.Close()
			}
			return
		}
		ch := c.queue[0]
		c.mu.Unlock()

		// Sleeping is fine: the wait is bounded by the configured delay.
		if w := time.Until(ch.due); w > 0 {
			time.Sleep(w)
		}
		var err error
		if !c.isCut() {
			_, err = c.Conn.Write(ch.b)
		}

		c.mu.Lock()
		c.queue[0] = chunk{}
		c.queue = c.queue[1:]
		c.queued -= len(ch.b)
		if err != nil && c.err == nil {
			c.err = err
		}
		c.space.Broadcast()
		c.mu.Unlock()
	}
}

// Close implements net.Conn.Close. Bytes still held back are delivered
// first, as the kernel does after close(2); reads fail at once.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed.Store(true)
	c.space.Broadcast()
	if c.busy {
		c.closeAfterDrain = true
		last := c.lastDue
		c.mu.Unlock()
		// Unblock readers now; bound the drain in case the peer stops reading.
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
		_ = c.Conn.SetWriteDeadline(last.Add(10 * time.Second))
		return nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// Listener wraps l so that accepted streams are subject to the faults, with
// the remote address as the peer. A nil f returns l itself.
func (f *Faults) Listener(l net.Listener) net.Listener {
	if f == nil {
		return l
	}
	return &listener{Listener: l, f: f}
}

type listener struct {
	net.Listener
	f *Faults
}

// Accept implements net.Listener.Accept.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.f.Conn(c, c.RemoteAddr().String()), nil
}

// DialFunc has the signature of net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial wraps dial: a dial to a blocked peer hangs until ctx is done, like a
// connection attempt over a cut link, and then fails with ErrBlocked (at
// once if ctx can never be done); other streams are wrapped with Conn.
// A nil f returns dial itself.
func (f *Faults) Dial(dial DialFunc) DialFunc {
	if f == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if f.Blocked(addr) {
			if ctx.Done() != nil {
				<-ctx.Done()
			}
			return nil, &net.OpError{Op: "dial", Net: network, Err: ErrBlocked}
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return f.Conn(c, addr), nil
	}
}

// DialTimeoutFunc has the shape of memberlist's and raft's stream dialers.
type DialTimeoutFunc func(addr string, timeout time.Duration) (net.Conn, error)

// DialTimeout is Dial for dialers that take a timeout instead of a context.
func (f *Faults) DialTimeout(dial DialTimeoutFunc) DialTimeoutFunc {
	if f == nil {
		return dial
	}
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if f.Blocked(addr) {
			if timeout > 0 {
				time.Sleep(timeout)
			}
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ErrBlocked}
		}
		c, err := dial(addr, timeout)
		if err != nil {
			return nil, err
		}
		return f.Conn(c, addr), nil
	}
}
