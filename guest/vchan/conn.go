package vchan

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/ring"
)

// DomID is a domain id.
type DomID = abi.DomID

// ErrPeerGone is what Write returns once the other end has closed the
// vchan, or its domain (or host) is gone.
var ErrPeerGone = fmt.Errorf("vchan: the peer closed the vchan or is gone: %w", syscall.EPIPE)

// ErrCorrupt means the peer's index claims more than its ring holds;
// libxenvchan would stall on such a ring forever, a Conn fails instead.
var ErrCorrupt = fmt.Errorf("vchan: %w", ring.ErrCorrupt)

// Addr is one end of a vchan: a domain and the XenStore path the server
// published the vchan under.
type Addr struct {
	Dom  DomID
	Path string
}

// Network is "vchan".
func (a Addr) Network() string { return "vchan" }

func (a Addr) String() string { return fmt.Sprintf("dom%d:%s", a.Dom, a.Path) }

var _ net.Conn = (*Conn)(nil)

// Which deadline a wait obeys.
const (
	reading = iota
	writing
)

// Conn is one end of a vchan, server or client. It is a net.Conn: one
// Read and one Write may run at once, and Close interrupts both.
type Conn struct {
	server bool
	local  Addr
	remote Addr

	evt  *evtchn.Handle
	port evtchn.Port // the vchan's event channel
	kick evtchn.Port // an IPI port of evt: wakes a waiter for Close and deadline changes

	ctl    []byte       // the control page
	rd, wr *ring.Stream // the ring this end reads, and the one it writes

	ownLive, peerLive int // offsets of this end's live byte and the peer's
	ownReq, peerReq   int // the byte the peer sets to ask this end for events (this end clears it), and the one this end sets

	res resources

	// rmu serialises Read and guards freed.
	rmu   sync.Mutex
	freed int // bytes read since the consumer index was last released
	// wmu serialises Write.
	wmu sync.Mutex

	// mu guards the fields below.
	mu       sync.Mutex
	closed   bool
	deadline [2]time.Time  // reading, writing
	leading  bool          // a goroutine waits on evt
	woke     chan struct{} // closed when the leading wait ends
	closeErr error         // Close's result, for a second Close
}

// resources are what setup acquired and Close gives back.
type resources struct {
	gnt   *gnttab.Handle
	xs    *xs.Client
	ownXS bool // opened for this Conn: closed with it

	ctlShare, leftShare, rightShare *gnttab.Share   // server
	ctlMap, leftMap, rightMap       *gnttab.Mapping // client
}

// LocalAddr is this end: its domain and the vchan's path.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the peer's domain and the vchan's path.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Orders are the rings' orders (log2 of their sizes): left is the ring
// the client writes, right the one the server writes.
func (c *Conn) Orders() (left, right uint16) {
	if c.server {
		return c.order(c.rd), c.order(c.wr)
	}
	return c.order(c.wr), c.order(c.rd)
}

func (c *Conn) order(s *ring.Stream) uint16 {
	o := uint16(0)
	for 1<<o < s.Size() {
		o++
	}
	return o
}

// load8 and store8 read and write one byte of the control page's live
// and notify word atomically: the peer writes the other bytes of that
// word at the same time.
func load8(b []byte, off int) uint8 {
	return uint8(ring.Load32(b, off&^3) >> (uint(off&3) * 8))
}

func store8(b []byte, off int, v uint8) {
	shift := uint(off&3) * 8
	for {
		old := ring.Load32(b, off&^3)
		nw := old&^(0xff<<shift) | uint32(v)<<shift
		if ring.CompareAndSwap32(b, off&^3, old, nw) {
			return
		}
	}
}

// setByte stores a control byte and reports the write (only that byte
// ships: the peer owns its neighbours).
func (c *Conn) setByte(off int, v uint8) {
	store8(c.ctl, off, v)
	c.evt.Wrote(c.ctl[off : off+1])
}

// State is libxenvchan_is_open: 0 once the peer has closed or gone, 1
// while connected, 2 for a server whose client has not connected yet.
func (c *Conn) State() int {
	c.evt.Acquire()
	if c.peerGone() {
		return 0
	}
	return int(load8(c.ctl, c.peerLive))
}

// peerGone reports whether the other end has closed or died: its live
// byte is cleared (by itself, or by the unmap notification when it
// died), or its event channel is closed.
func (c *Conn) peerGone() bool {
	return load8(c.ctl, c.peerLive) == abi.VCHAN_LIVE_GONE || c.evt.PeerGone(c.port)
}

// request is libxenvchan's request_notify: ask the peer for an event on
// its next write (VCHAN_NOTIFY_WRITE) or read (VCHAN_NOTIFY_READ).
func (c *Conn) request(bit uint8) {
	ring.Or8(c.ctl, c.peerReq, bit)
	c.evt.Wrote(c.ctl[c.peerReq : c.peerReq+1])
}

// notifyIfAsked is libxenvchan's send_notify: clear bit in the byte the
// peer sets and send an event if it was set. It reports whether it sent.
func (c *Conn) notifyIfAsked(bit uint8) (bool, error) {
	if load8(c.ctl, c.ownReq)&bit == 0 {
		return false, nil // the common case, without a locked write
	}
	if ring.And8(c.ctl, c.ownReq, ^bit)&bit == 0 {
		return false, nil
	}
	c.evt.Wrote(c.ctl[c.ownReq : c.ownReq+1])
	return true, c.evt.Notify(c.port)
}

// Read reads what the peer wrote, at most len(b) bytes, waiting while
// the ring is empty. Once the peer has closed or died and everything it
// wrote was read, Read returns io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(b) == 0 {
		return 0, c.check(reading)
	}
	for {
		if err := c.check(reading); err != nil {
			return 0, err
		}
		n, err := c.recv(b)
		if n > 0 || err != nil {
			return n, err
		}
		if c.peerGone() {
			// What it wrote before it went is visible now that its
			// going is.
			if n, err := c.recv(b); n > 0 || err != nil {
				return n, err
			}
			return 0, io.EOF
		}
		if ring.Spin(SpinFor, func() bool { c.evt.Acquire(); return c.readable() }) {
			continue
		}
		seen := c.wakes()
		c.request(abi.VCHAN_NOTIFY_WRITE)
		c.evt.Acquire()
		if c.readable() || c.peerGone() {
			continue
		}
		if err := c.wait(reading, seen); err != nil {
			return 0, err
		}
	}
}

// readable reports whether there is data, or a corrupt ring to report.
func (c *Conn) readable() bool {
	n, err := c.rd.Readable()
	return n > 0 || err != nil
}

// recv copies what is there into b and tells the peer if it asked.
// Preconditions: c.rmu held.
func (c *Conn) recv(b []byte) (int, error) {
	c.evt.Acquire()
	var n int
	var err error
	c.evt.View(func() { n, err = c.rd.Read(b) })
	if err != nil {
		return 0, c.opError("read", ErrCorrupt)
	}
	if n == 0 {
		return 0, nil
	}
	sent, err := c.notifyIfAsked(abi.VCHAN_NOTIFY_READ)
	if err != nil {
		return n, c.opError("read", err)
	}
	// A writer on another host that is not waiting learns of the space
	// once an eighth of the ring is free, not after every read: it only
	// needs room before the ring fills, and one that waits has asked
	// for an event, which releases everything.
	c.freed += n
	if sent {
		c.freed = 0
	} else if c.freed >= c.rd.Size()/8 {
		c.evt.Release(c.port)
		c.freed = 0
	}
	return n, nil
}

// Write writes all of b, waiting while the ring is full. It fails with
// ErrPeerGone once the peer has closed or died.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for {
		if err := c.check(writing); err != nil {
			return done, err
		}
		c.evt.Acquire()
		if c.peerGone() {
			return done, c.opError("write", ErrPeerGone)
		}
		if len(b) == 0 {
			return done, nil
		}
		n, err := c.wr.Write(b)
		if err != nil {
			return done, c.opError("write", ErrCorrupt)
		}
		if n > 0 {
			done += n
			b = b[n:]
			sent, err := c.notifyIfAsked(abi.VCHAN_NOTIFY_WRITE)
			if err != nil {
				return done, c.opError("write", err)
			}
			if !sent {
				// A reader on another host that polls sees the data
				// without an event.
				c.evt.Release(c.port)
			}
			if len(b) == 0 {
				// All written: a peer that has read it all and closed
				// meanwhile does not make this Write fail.
				return done, nil
			}
			continue
		}
		if ring.Spin(SpinFor, func() bool { c.evt.Acquire(); return c.writable() || c.peerGone() }) {
			continue
		}
		seen := c.wakes()
		c.request(abi.VCHAN_NOTIFY_READ)
		c.evt.Acquire()
		if c.writable() || c.peerGone() {
			continue
		}
		if err := c.wait(writing, seen); err != nil {
			return done, err
		}
	}
}

// writable reports whether there is room, or a corrupt ring to report.
func (c *Conn) writable() bool {
	n, err := c.wr.Writable()
	return n > 0 || err != nil
}

// WaitClient blocks a server until its client has connected (or the
// read deadline passes, or the Conn is closed). Read and Write need not
// call it: Read waits for data anyway, and Write may fill the ring
// before the client comes, as libxenvchan's server may.
func (c *Conn) WaitClient() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if err := c.check(reading); err != nil {
			return err
		}
		seen := c.wakes()
		c.evt.Acquire()
		if load8(c.ctl, c.peerLive) != abi.VCHAN_LIVE_WAITING {
			return nil
		}
		if err := c.wait(reading, seen); err != nil {
			return err
		}
	}
}

// check fails once the Conn is closed or the deadline of a read or
// write has passed.
func (c *Conn) check(which int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkLocked(which)
}

// Preconditions: c.mu held.
func (c *Conn) checkLocked(which int) error {
	op := [2]string{"read", "write"}[which]
	if c.closed {
		return c.opError(op, net.ErrClosed)
	}
	if d := c.deadline[which]; !d.IsZero() && !time.Now().Before(d) {
		return c.opError(op, os.ErrDeadlineExceeded)
	}
	return nil
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "vchan", Source: c.local, Addr: c.remote, Err: err}
}

// wakes returns the channel the next end of a wait on the event
// channel closes. A Read or Write takes it before it last looks at the
// ring, and hands it to wait.
func (c *Conn) wakes() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.woke
}

// wait sleeps until the event channel fires, the deadline of which
// passes, or Close or a deadline change interrupts it; the caller checks
// again in any case. A Read and a Write share the one event channel:
// the first to wait blocks on it and the other waits for that wait to
// end, whichever of them the event was for. seen is what wakes returned
// before the caller last looked at the ring: if a wait ended since, the
// event it took may be the one the caller needs (the other goroutine
// took it while this one looked), so wait returns at once to look again
// rather than sleep through it.
func (c *Conn) wait(which int, seen chan struct{}) error {
	c.mu.Lock()
	if err := c.checkLocked(which); err != nil {
		c.mu.Unlock()
		return err
	}
	select {
	case <-seen:
		c.mu.Unlock()
		return nil
	default: // seen is c.woke: no wait has ended since
	}
	timeout := time.Duration(-1)
	if d := c.deadline[which]; !d.IsZero() {
		timeout = time.Until(d)
	}
	if c.leading {
		woke := c.woke
		c.mu.Unlock()
		if timeout < 0 {
			<-woke
			return nil
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-woke:
		case <-t.C:
		}
		return nil
	}
	c.leading = true
	c.mu.Unlock()
	p, err := c.evt.Wait(timeout)
	if err == nil {
		err = c.evt.Unmask(p)
	} else if errors.Is(err, evtchn.ErrNoEvent) {
		err = nil // timed out: the caller's check says so
	}
	c.mu.Lock()
	c.leading = false
	close(c.woke)
	c.woke = make(chan struct{})
	c.mu.Unlock()
	if err != nil {
		return c.opError([2]string{"read", "write"}[which], err)
	}
	return nil
}

// interrupt wakes a goroutine blocked on the event channel, so that it
// sees a new deadline or the Conn closed.
func (c *Conn) interrupt() {
	c.mu.Lock()
	leading := c.leading
	c.mu.Unlock()
	if leading {
		c.evt.Notify(c.kick)
	}
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, reading, writing)
}

// SetReadDeadline makes a Read (and WaitClient) that is still waiting at
// t fail with an error that is os.ErrDeadlineExceeded; the zero time
// means no deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(t, reading) }

// SetWriteDeadline does the same for Write: some of the data may have
// been written when it fails.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, writing) }

func (c *Conn) setDeadline(t time.Time, which ...int) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("set deadline", net.ErrClosed)
	}
	for _, w := range which {
		c.deadline[w] = t
	}
	c.mu.Unlock()
	c.interrupt()
	return nil
}

// SpinFor is how long a Read or Write polls the ring before it sleeps on
// the event channel: waking through the peer's eventfd costs tens of
// microseconds on a busy host, more than moving a chunk of data. Zero
// disables polling.
var SpinFor = 20 * time.Microsecond

// String describes the vchan's shared state (indices, live and notify
// bytes) as this end sees it, for a stuck program to print.
func (c *Conn) String() string {
	role := "client"
	if c.server {
		role = "server"
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Sprintf("vchan %s %v<->%v: closed", role, c.local, c.remote)
	}
	var s string
	c.evt.View(func() {
		l := func(off int) uint32 { return ring.Load32(c.ctl, off) }
		s = fmt.Sprintf("vchan %s %v<->%v: left cons %d prod %d, right cons %d prod %d, cli_live %d srv_live %d cli_notify %d srv_notify %d, peer gone %v",
			role, c.local, c.remote, l(abi.VCHAN_LEFT_CONS), l(abi.VCHAN_LEFT_PROD), l(abi.VCHAN_RIGHT_CONS), l(abi.VCHAN_RIGHT_PROD),
			load8(c.ctl, abi.VCHAN_CLI_LIVE), load8(c.ctl, abi.VCHAN_SRV_LIVE), load8(c.ctl, abi.VCHAN_CLI_NOTIFY), load8(c.ctl, abi.VCHAN_SRV_NOTIFY),
			c.evt.PeerGone(c.port))
	})
	return s
}
