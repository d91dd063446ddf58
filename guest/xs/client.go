// Package xs is a XenStore client: what a domain, a device backend or the
// CLI links to talk to xenstored. It speaks the xs_wire protocol over any
// byte stream (a Unix socket, a ring), finds the daemon the way libxenstore
// does, and maps XS_ERROR replies to syscall.Errno values, so that
// err == syscall.ENOENT works as it does with the C library.
//
// A Client is safe for concurrent use. Unlike libxenstore, which serialises
// requests per handle, several requests may be in flight at once: each gets
// its own req_id and a reader goroutine matches replies to callers by it.
// The same goroutine routes unsolicited XS_WATCH_EVENT messages to the
// Watch whose token they carry, so a caller blocked in a request never stops
// watch events from arriving, and a watcher that reads slowly never stops
// replies.
//
// Everything the daemon sends is untrusted: malformed framing, a reply to no
// request or a reply of the wrong type ends the connection with ErrProtocol
// (libxenstore closes the fd then, too); a malformed payload fails only the
// call it answers.
package xs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// DefaultSocket is where a shi agent serves XenStore unless told otherwise.
// It equals api.DefaultXenstoreSocket (guest code may not import api; a test
// in internal/cli checks that the two agree).
const DefaultSocket = "/run/shi/xenstored.sock"

// Environment variables libxenstore reads to find the daemon.
const (
	EnvPath   = "XENSTORED_PATH"   // the socket (or device) itself
	EnvRunDir = "XENSTORED_RUNDIR" // a directory holding "socket"
)

var (
	// ErrClosed is returned by calls on a client whose connection ended,
	// either by Close or because the daemon hung up.
	ErrClosed = errors.New("xs: connection closed")
	// ErrProtocol means the daemon sent something the protocol does not allow.
	ErrProtocol = errors.New("xs: protocol violation by xenstored")
)

// SocketPath returns the daemon's path as libxenstore's xs_open finds it:
// $XENSTORED_PATH, else $XENSTORED_RUNDIR/socket, else DefaultSocket (shi's
// path, not Xen's /var/run/xenstored/socket).
func SocketPath(getenv func(string) string) string {
	if p := getenv(EnvPath); p != "" {
		return p
	}
	if d := getenv(EnvRunDir); d != "" {
		return d + "/socket"
	}
	return DefaultSocket
}

// OpenEnv opens the daemon named by the process environment (SocketPath).
func OpenEnv() (*Client, error) { return Open(SocketPath(os.Getenv)) }

// Open connects to the daemon at path: a Unix stream socket, or, when path
// exists and is not a socket, a xenbus-style device opened read-write.
func Open(path string) (*Client, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("xs: open %s: %w", path, err)
		}
		return New(f), nil
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("xs: connect %s: %w", path, unwrapSyscall(err))
	}
	return New(conn), nil
}

// unwrapSyscall keeps the errno of a failed dial reachable with errors.Is
// while dropping net.OpError's repetition of the address.
func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// Client is one connection to xenstored.
type Client struct {
	rw   io.ReadWriteCloser
	done chan struct{} // closed when the reader goroutine has exited

	wmu sync.Mutex // serialises whole messages on rw

	// mu guards the fields below.
	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]pending
	watches map[string][]*Watch // by token
	err     error               // why the connection ended; nil while open
}

type pending struct {
	typ uint32
	ch  chan result // buffered: the reader never blocks on a caller
}

type result struct {
	msg wire.Msg
	err error
}

// New returns a client speaking on rw, which it owns from now on.
func New(rw io.ReadWriteCloser) *Client {
	c := &Client{
		rw:      rw,
		done:    make(chan struct{}),
		nextID:  1,
		pending: make(map[uint32]pending),
		watches: make(map[string][]*Watch),
	}
	go c.readLoop()
	return c
}

// Close ends the connection. Calls in flight fail with ErrClosed and every
// Watch's channel is closed.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// Err returns why the connection ended, or nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail ends the connection with err (the first reason wins) and wakes
// everyone waiting on it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	for id, p := range c.pending {
		p.ch <- result{err: err}
		delete(c.pending, id)
	}
	ws := c.takeWatchesLocked()
	c.mu.Unlock()
	stopAll(ws)
	c.rw.Close()
}

// takeWatchesLocked forgets every watch and returns them, to be stopped
// once c.mu is released. Preconditions: c.mu held.
func (c *Client) takeWatchesLocked() []*Watch {
	var ws []*Watch
	for tok, l := range c.watches {
		ws = append(ws, l...)
		delete(c.watches, tok)
	}
	return ws
}

func stopAll(ws []*Watch) {
	for _, w := range ws {
		w.stop()
	}
}

func (c *Client) readLoop() {
	defer close(c.done)
	r := bufio.NewReader(c.rw)
	for {
		m, err := wire.Read(r)
		if err != nil {
			switch {
			case err == io.EOF:
				err = ErrClosed
			case errors.Is(err, wire.ErrTooLong), errors.Is(err, wire.ErrTruncated):
				err = fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			c.fail(err)
			return
		}
		if m.Type == abi.XS_WATCH_EVENT {
			c.deliver(m.Payload)
			continue
		}
		c.mu.Lock()
		p, ok := c.pending[m.ReqID]
		if ok {
			delete(c.pending, m.ReqID)
		}
		c.mu.Unlock()
		if !ok {
			c.fail(fmt.Errorf("%w: reply %s to no request", ErrProtocol, m))
			return
		}
		if m.Type != p.typ && m.Type != abi.XS_ERROR {
			err := fmt.Errorf("%w: %s answers %s", ErrProtocol, m, abi.XSTypeName(p.typ))
			c.fail(err) // first: the caller then sees the connection ended
			p.ch <- result{err: err}
			return
		}
		p.ch <- result{msg: m}
	}
}

// request sends one message and waits for its reply's payload. An XS_ERROR
// reply becomes its syscall.Errno.
func (c *Client) request(typ, tx uint32, payload []byte) ([]byte, error) {
	if len(payload) > abi.XENSTORE_PAYLOAD_MAX {
		return nil, syscall.E2BIG
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	id := c.nextID
	for id == 0 || c.pending[id].ch != nil {
		id++
	}
	c.nextID = id + 1
	c.pending[id] = pending{typ: typ, ch: ch}
	c.mu.Unlock()

	m := wire.Msg{Type: typ, ReqID: id, TxID: tx, Payload: payload}
	c.wmu.Lock()
	err := m.Write(c.rw)
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
	}
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	if r.msg.Type == abi.XS_ERROR {
		return nil, abi.XSErrno(cString(r.msg.Payload))
	}
	return r.msg.Payload, nil
}

// cString returns p up to its first NUL (all of p if there is none), as the
// C library reads a reply that it NUL-terminates itself.
func cString(p []byte) string {
	for i, b := range p {
		if b == 0 {
			return string(p[:i])
		}
	}
	return string(p)
}
