package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// dialStream resolves host, dials it, and runs the handshake of kind and
// then after (a link's hello and verdict; may be nil), all within ctx and
// the handshake timeout. The connection returned has no deadline.
func (m *Mesh) dialStream(ctx context.Context, host string, kind byte, after func(net.Conn) error) (net.Conn, error) {
	addr, ok := m.cfg.Resolve(host)
	if !ok {
		return nil, fmt.Errorf("transport: host %q has no known address", host)
	}
	ctx, cancel := context.WithTimeout(ctx, m.tun.handshakeTimeout)
	defer cancel()
	m.stats.dials.Add(1)
	raw, err := m.dial(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("transport: dial %s (%s): %w", host, addr, err)
	}
	setNoDelay(raw)
	c, err := m.stream(raw, host)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("transport: stream to %s (%s): %w", host, addr, err)
	}
	// The deadline bounds the handshake; the AfterFunc makes ctx's end
	// (the caller's, Forget's, Close's) cut it short as well.
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err = dialHandshake(c, m.cfg.Key, kind, m.cfg.Name)
	if err == nil && after != nil {
		err = after(c)
	}
	if !stop() && err == nil {
		err = ctx.Err() // the deadline is now in the past: c is spoilt
	}
	if err != nil {
		c.Close()
		if errors.Is(err, ErrAuth) {
			m.stats.authFailures.Add(1)
		} else if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("transport: handshake with %s (%s): %w", host, addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// DialLink opens a new connection of the link kind to host, runs the
// handshake, sends hello (at most MaxHello bytes) and waits for the
// acceptor's verdict. It returns the connection ready for raw use: it
// reads exactly the verdict byte, so whatever the acceptor sends next is
// still in the connection. A refused link returns an error wrapping the
// acceptor's syscall.Errno; a key mismatch one wrapping ErrAuth. DialLink
// blocks for up to the handshake timeout: call it outside locks. The
// caller owns the connection (LinkFile turns it into a descriptor).
func (m *Mesh) DialLink(ctx context.Context, host string, hello []byte) (net.Conn, error) {
	switch {
	case host == "":
		return nil, errors.New("transport: link to an empty host name")
	case host == m.cfg.Name:
		return nil, fmt.Errorf("transport: link to this host (%q)", host)
	case len(hello) > MaxHello:
		return nil, fmt.Errorf("transport: hello of %d bytes (max %d)", len(hello), MaxHello)
	}
	if m.ctx.Err() != nil {
		return nil, ErrClosed
	}
	// Close ends a DialLink in progress too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()

	var verdict [1]byte
	c, err := m.dialStream(ctx, host, connLink, func(c net.Conn) error {
		if err := writeHello(c, hello); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, verdict[:]); err != nil {
			return fmt.Errorf("reading the link's verdict: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if verdict[0] != 0 {
		c.Close()
		return nil, fmt.Errorf("transport: link to %s refused: %w", host, syscall.Errno(verdict[0]))
	}
	return c, nil
}

// acceptLink reads an accepted link's hello and asks Config.Link. It
// reports whether Link took the connection.
func (m *Mesh) acceptLink(raw, c net.Conn, name, addr string) bool {
	hello, err := readHello(c)
	if err != nil {
		m.refused(err, addr, name)
		return false
	}
	_ = c.SetDeadline(time.Time{})
	lc := &linkConn{Conn: c}
	err = syscall.ECONNREFUSED
	if m.cfg.Link != nil {
		err = m.cfg.Link(name, hello, lc)
	}
	if err == nil {
		m.untrack(raw)
		if err := lc.accept(); err != nil {
			m.log.Info("transport: accepted link lost before its verdict", "peer", name, "addr", addr, "err", err)
		}
		return true
	}
	if !lc.refuse(errnoOf(err)) {
		m.log.Error("transport: Link used a link it refused", "peer", name, "addr", addr)
	}
	m.log.Info("transport: refused link", "peer", name, "addr", addr, "err", err)
	return false
}

// errnoOf is the verdict byte for a refusal: err's syscall.Errno if it
// has one that fits, else ECONNREFUSED.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e > 0 && e < 256 {
		return e
	}
	return syscall.ECONNREFUSED
}

// linkConn is an accepted link as Config.Link receives it. The verdict
// byte must reach the dialer before any byte of the link, but the mesh
// knows the verdict only when Link returns, and Link may already have
// passed the connection on (to LinkFile, to a domain). So the accepting
// verdict is sent by whichever comes first: the first Write, LinkFile, or
// the mesh once Link returns nil.
type linkConn struct {
	net.Conn
	once sync.Once
	err  error // writing the accepting verdict failed; set in once
}

// accept sends the accepting verdict unless a verdict was sent.
func (l *linkConn) accept() error {
	l.once.Do(func() {
		_, l.err = l.Conn.Write([]byte{0})
	})
	return l.err
}

// refuse sends e as the verdict; false means a verdict was already sent.
func (l *linkConn) refuse(e syscall.Errno) bool {
	ok := false
	l.once.Do(func() {
		ok = true
		_, _ = l.Conn.Write([]byte{byte(e)})
	})
	return ok
}

// Write implements net.Conn.Write, sending the verdict first.
func (l *linkConn) Write(b []byte) (int, error) {
	if err := l.accept(); err != nil {
		return 0, err
	}
	return l.Conn.Write(b)
}

var _ net.Conn = (*linkConn)(nil)
