package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// chunkSize is the size of the buffers Send encodes frames into. The
// writer hands a whole list of them to one vectored write, so a burst of
// small frames costs a few syscalls, and Send does not allocate per frame.
// It holds several of the largest frames.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

func getChunk() []byte { return (*chunkPool.Get().(*[]byte))[:0] }

func putChunk(b []byte) {
	if cap(b) == chunkSize {
		b = b[:0]
		chunkPool.Put(&b)
	}
}

// peer is the outbound side of one destination host: the queue Send fills
// and the writer goroutine that empties it into the host's connection.
type peer struct {
	host   string
	ctx    context.Context // done when the peer is forgotten or the mesh closes
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: frames were queued since the writer last looked

	// mu guards every field below it. Taken after Mesh.mu, never before.
	mu     sync.Mutex
	gone   bool     // stopped: a Send that finds it looks the host up again
	chunks [][]byte // queued frames, in order; the last chunk is being filled
	frames int      // frames in chunks
	bytes  int      // bytes in chunks
	conn   net.Conn // the writer's connection, for stop to close; nil if none
}

// Send queues msg for host and returns at once: it never blocks on the
// network. The frame is encoded before Send returns, so msg may be reused.
// Frames to one host are written in the order of the Send calls; the
// host's writer connects on demand and reconnects with backoff. Send
// fails if host is empty or this host, if msg.Data is too large
// (ErrTooLarge), if the host already has maxQueue bytes waiting
// (ErrQueueFull), or after Close (ErrClosed).
//
// A nil error means queued, not delivered: frames written to a
// connection that then breaks may be lost, and frames for a host that
// stays unreachable are dropped after a while (giveUp; Forget drops them
// at once). The hypervisor treats a host that stays unreachable as dead,
// through membership, so it does not wait for answers that never come.
func (m *Mesh) Send(host string, msg *Msg) error {
	switch {
	case host == "":
		return errors.New("transport: send to an empty host name")
	case host == m.cfg.Name:
		return fmt.Errorf("transport: send to this host (%q)", host)
	case len(msg.Data) > MaxData:
		return fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(msg.Data), MaxData)
	}
	size := FrameSize(msg)
	for {
		p, err := m.peer(host)
		if err != nil {
			return err
		}
		p.mu.Lock()
		if p.gone {
			// Forgotten between the lookup and now: look again.
			p.mu.Unlock()
			continue
		}
		if p.bytes+size > m.tun.maxQueue {
			p.mu.Unlock()
			m.stats.queueDrops.Add(1)
			return fmt.Errorf("%w: %d bytes waiting for %s", ErrQueueFull, p.bytes, host)
		}
		last := len(p.chunks) - 1
		if last < 0 || cap(p.chunks[last])-len(p.chunks[last]) < size {
			p.chunks = append(p.chunks, getChunk())
			last++
		}
		p.chunks[last] = AppendFrame(p.chunks[last], msg)
		p.frames++
		p.bytes += size
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
		return nil
	}
}

// peer returns host's peer, creating it and starting its writer if there
// is none.
func (m *Mesh) peer(host string) (*peer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if p := m.peers[host]; p != nil {
		return p, nil
	}
	ctx, cancel := context.WithCancel(m.ctx)
	p := &peer{host: host, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	m.peers[host] = p
	m.wg.Add(1)
	go m.writeLoop(p)
	return p, nil
}

// stop ends p for good: its writer exits and its connection closes. It
// returns how many queued frames it dropped.
func (p *peer) stop() int {
	p.mu.Lock()
	p.gone = true
	c := p.conn
	n := p.dropLocked()
	p.mu.Unlock()
	p.cancel()
	if c != nil {
		c.Close()
	}
	return n
}

// dropLocked empties the queue and returns how many frames it held.
// Preconditions: p.mu is held.
func (p *peer) dropLocked() int {
	n := p.frames
	for i, b := range p.chunks {
		putChunk(b)
		p.chunks[i] = nil
	}
	p.chunks = p.chunks[:0]
	p.frames, p.bytes = 0, 0
	return n
}

// take moves the queued chunks to dst and returns it with their frame
// count.
func (p *peer) take(dst [][]byte) ([][]byte, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	dst = append(dst, p.chunks...)
	clear(p.chunks)
	p.chunks = p.chunks[:0]
	n := p.frames
	p.frames, p.bytes = 0, 0
	return dst, n
}

func (p *peer) queued() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frames > 0
}

func (p *peer) setConn(c net.Conn) {
	p.mu.Lock()
	p.conn = c
	p.mu.Unlock()
}

// writeLoop is p's writer: it waits for frames, connects when there are
// some and no connection, and writes everything queued in one vectored
// write. It exits when p is stopped.
func (m *Mesh) writeLoop(p *peer) {
	defer m.wg.Done()
	var (
		c         net.Conn
		dead      chan struct{} // closed when c's watcher sees it end
		backoff   time.Duration
		failing   time.Time // when connecting began to fail; zero if it is not failing
		connected bool      // a connection to the host was made before
		batch     [][]byte  // the chunks being written, to recycle
		vec       [][]byte  // backing of the net.Buffers handed to WriteTo
	)
	drop := func() {
		c.Close()
		p.setConn(nil)
		c, dead = nil, nil
	}
	defer func() {
		if c != nil {
			drop()
		}
	}()
	for {
		// A connection the watcher saw end is never written to: that
		// write would vanish into a dead socket.
		select {
		case <-dead:
			drop()
		default:
		}
		if !p.queued() {
			select {
			case <-p.wake:
			case <-dead: // nil, and so never ready, without a connection
				drop()
			case <-p.ctx.Done():
				return
			}
			continue
		}
		if c == nil {
			var err error
			c, dead, err = m.connect(p)
			if err != nil {
				if p.ctx.Err() != nil {
					return
				}
				if failing.IsZero() {
					failing = time.Now()
					m.log.Warn("transport: cannot reach host", "peer", p.host, "err", err)
				} else {
					m.log.Debug("transport: cannot reach host", "peer", p.host, "err", err)
				}
				if time.Since(failing) >= m.tun.giveUp {
					p.mu.Lock()
					n := p.dropLocked()
					p.mu.Unlock()
					m.log.Warn("transport: dropped frames for an unreachable host", "peer", p.host, "frames", n, "after", m.tun.giveUp)
					m.stats.queueDrops.Add(uint64(n))
					failing, backoff = time.Time{}, 0
					continue
				}
				backoff = min(max(2*backoff, m.tun.backoffMin), m.tun.backoffMax)
				if !sleep(p.ctx, backoff) {
					return
				}
				continue
			}
			if connected {
				m.stats.reconnects.Add(1)
			}
			if !failing.IsZero() {
				m.log.Info("transport: host reachable again", "peer", p.host, "after", time.Since(failing).Round(time.Millisecond))
			}
			connected, failing, backoff = true, time.Time{}, 0
		}

		var frames int
		batch, frames = p.take(batch[:0])
		if frames == 0 {
			continue // dropped while we connected (Forget, Close)
		}
		// WriteTo consumes its Buffers, advancing the slice and reslicing
		// its elements, so it gets its own header over vec; batch keeps
		// the chunks whole for recycling.
		vec = append(vec[:0], batch...)
		bufs := net.Buffers(vec)
		_ = c.SetWriteDeadline(time.Now().Add(m.tun.writeTimeout))
		n, err := bufs.WriteTo(c)
		m.stats.writes.Add(1)
		for i, b := range batch {
			putChunk(b)
			batch[i] = nil
		}
		clear(vec)
		if err != nil {
			// Some of the batch may have arrived; the receiver drops a
			// frame cut short. Count the whole batch as lost.
			m.stats.queueDrops.Add(uint64(frames))
			if p.ctx.Err() == nil {
				m.log.Info("transport: write failed; frames lost", "peer", p.host, "frames", frames, "err", err)
			}
			drop()
			continue
		}
		m.stats.framesSent.Add(uint64(frames))
		m.stats.bytesSent.Add(uint64(n))
	}
}

// connect dials p's host and starts a watcher on the new connection: the
// acceptor never sends after the handshake, so the watcher's read returns
// only when the connection ends, which the writer then learns before its
// next write instead of losing that write into a dead socket.
func (m *Mesh) connect(p *peer) (net.Conn, chan struct{}, error) {
	c, err := m.dialStream(p.ctx, p.host, connControl, nil)
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	if p.gone {
		p.mu.Unlock()
		c.Close()
		return nil, nil, ErrClosed
	}
	p.conn = c
	p.mu.Unlock()
	dead := make(chan struct{})
	m.wg.Add(1)
	go m.watch(c, dead)
	return c, dead, nil
}

func (m *Mesh) watch(c net.Conn, dead chan struct{}) {
	defer m.wg.Done()
	var b [1]byte
	_, _ = c.Read(b[:])
	c.Close()
	close(dead)
}
