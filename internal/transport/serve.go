package transport

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// inHost is the accepted control connections of one dialer name.
type inHost struct {
	// deliverMu is held while a message of this host is being handled, and
	// with it the check that its connection was not stopped. A new
	// connection from the host stops the old ones, so every message of an
	// old connection is handled before any of the new one: messages may
	// be lost across a reconnect, but never reordered. Taken before
	// Mesh.mu.
	deliverMu sync.Mutex
	conns     map[*inConn]struct{} // guarded by Mesh.mu
}

// inConn is one accepted control connection.
type inConn struct {
	c net.Conn
	// stopped is set by Forget, Close or a newer connection from the same
	// host: frames the reader has buffered are no longer delivered.
	stopped atomic.Bool
}

// acceptLoop accepts connections until the listener closes, serving each
// on a goroutine of its own.
func (m *Mesh) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				m.log.Error("transport: listener closed under the mesh", "err", err)
				return
			}
			// Out of descriptors and the like: wait, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("transport: accept failed", "err", err, "retry", delay)
			if !sleep(m.ctx, delay) {
				return
			}
			continue
		}
		delay = 0
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return
		}
		m.conns[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.serve(c)
	}
}

// serve runs the acceptor's side of the handshake on raw and then reads
// frames (a control connection) or hands it to Config.Link (a link).
func (m *Mesh) serve(raw net.Conn) {
	defer m.wg.Done()
	addr := raw.RemoteAddr().String()
	handedOver := false
	defer func() {
		if !handedOver {
			m.untrack(raw)
			raw.Close()
		}
	}()
	setNoDelay(raw)
	c, err := m.stream(raw, "")
	if err != nil {
		m.log.Warn("transport: refused connection: stream setup failed", "addr", addr, "err", err)
		return
	}
	// The deadline covers the handshake and a link's hello; the mesh's
	// Close closes raw if it comes sooner.
	_ = c.SetDeadline(time.Now().Add(m.tun.handshakeTimeout))
	kind, name, err := acceptHandshake(c, m.cfg.Key)
	if err == nil {
		err = m.tlsPeer(c, name)
	}
	if err != nil {
		m.refused(err, addr, name)
		return
	}
	if kind == connLink {
		handedOver = m.acceptLink(raw, c, name, addr)
		return
	}
	_ = c.SetDeadline(time.Time{})
	m.readFrames(c, name, addr)
}

// refused counts and logs a connection closed in its handshake or hello.
func (m *Mesh) refused(err error, addr, name string) {
	// Logged, then counted: whoever watches the counters finds the line.
	switch {
	case errors.Is(err, ErrAuth):
		m.log.Warn("transport: refused connection: authentication failed", "addr", addr, "peer", name, "err", err)
		m.stats.authFailures.Add(1)
	case errors.Is(err, ErrMalformed):
		m.log.Warn("transport: refused connection: malformed handshake", "addr", addr, "peer", name, "err", err)
		m.stats.malformed.Add(1)
	case m.ctx.Err() != nil:
	default:
		m.log.Info("transport: handshake failed", "addr", addr, "peer", name, "err", err)
	}
}

// readFrames delivers the frames of an accepted control connection from
// name until it ends.
func (m *Mesh) readFrames(c net.Conn, name, addr string) {
	ic := &inConn{c: c}
	h := m.addInbound(name, ic)
	if h == nil {
		return
	}
	defer m.removeInbound(name, h, ic)
	r := NewReader(c)
	for {
		msg, err := r.Next()
		if err != nil {
			switch {
			case ic.stopped.Load() || m.ctx.Err() != nil:
			case errors.Is(err, ErrMalformed):
				m.log.Warn("transport: closing connection: malformed frame", "peer", name, "addr", addr, "err", err)
				m.stats.malformed.Add(1)
			case errors.Is(err, io.EOF):
				m.log.Debug("transport: connection closed by peer", "peer", name, "addr", addr)
			default:
				m.log.Info("transport: connection failed", "peer", name, "addr", addr, "err", err)
			}
			return
		}
		m.stats.framesReceived.Add(1)
		m.stats.bytesReceived.Add(uint64(FrameSize(&msg)))
		h.deliverMu.Lock()
		if ic.stopped.Load() {
			h.deliverMu.Unlock()
			return
		}
		m.cfg.Handle(name, msg)
		h.deliverMu.Unlock()
	}
}

// addInbound registers ic as name's current connection and stops the older
// ones (their dialer has moved on: its writer keeps one connection at a
// time). It returns nil if the mesh is closed.
func (m *Mesh) addInbound(name string, ic *inConn) *inHost {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	h := m.inbound[name]
	if h == nil {
		h = &inHost{conns: map[*inConn]struct{}{}}
		m.inbound[name] = h
	}
	var old []net.Conn
	for o := range h.conns {
		o.stopped.Store(true)
		old = append(old, o.c)
	}
	h.conns[ic] = struct{}{}
	m.mu.Unlock()
	for _, c := range old {
		m.log.Debug("transport: a newer connection replaces an older one", "peer", name)
		c.Close()
	}
	return h
}

func (m *Mesh) removeInbound(name string, h *inHost, ic *inConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(h.conns, ic)
	if len(h.conns) == 0 && m.inbound[name] == h {
		delete(m.inbound, name)
	}
}

// untrack removes an accepted connection from those Close closes.
func (m *Mesh) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}
