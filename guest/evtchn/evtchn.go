// Package evtchn is event channels for a shi domain, with the semantics of
// Xen's (spec/xen-abi.md §2) and the shape of libxenevtchn: a Handle binds
// ports, Fd is readable while one of them is pending, Pending returns a
// fired port masked, Unmask re-arms it.
//
// Each port is backed by an eventfd, watched edge-triggered by the
// handle's epoll set: every send wakes the set, and the sends that arrive
// before the receiver collects them coalesce into one report, which is
// Xen's pending bit (set by a send, cleared by delivery). The counter is
// never read, so receiving an event is one epoll_wait and nothing else.
// Masking is the handle's own bookkeeping: a masked port that fires is
// remembered and delivered by Unmask, as Xen's EVTCHNOP_unmask re-checks
// PENDING. Fd may therefore report readable for a masked port; Pending
// then returns ErrNoEvent.
//
// Sending to a peer on the same host is one write(2) to the peer port's
// eventfd, which the agent handed over when the ports were bound; it never
// involves the agent. A peer on another host is sent to on the link to its
// domain (guest/link), after the pages shared with it are released; a port
// whose doorbell or link has not arrived yet is sent to through the agent.
//
// Every entry into a handle acquires (guest/link): frames that arrived
// from other hosts are applied first, so an event is never seen before
// the data written ahead of it. A Wait releases to every remote peer
// before it blocks.
package evtchn

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/hv"
	"shi/guest/link"
	"shi/internal/abi"
	"shi/internal/hypercall"
	"shi/internal/shm"
)

type (
	// Port is an event-channel port (evtchn_port_t).
	Port = abi.EvtchnPort
	// DomID is a domain id.
	DomID = abi.DomID
)

// DOMID_SELF names the calling domain.
const DOMID_SELF = abi.DOMID_SELF

// ErrNoEvent means no port is pending (EAGAIN, as libxenevtchn's pending
// on a non-blocking handle).
var ErrNoEvent = fmt.Errorf("evtchn: no port pending: %w", syscall.EAGAIN)

// ErrNotBound means the port is not bound through this handle (EINVAL).
var ErrNotBound = fmt.Errorf("evtchn: port not bound through this handle: %w", syscall.EINVAL)

// ErrClosed means the handle has been closed.
var ErrClosed = errors.New("evtchn: handle closed")

// port is one bound port.
type port struct {
	ev       *shm.EventFD // its own eventfd
	bell     int          // the peer's doorbell, -1 if none
	remote   bool         // the peer is on another host
	peer     DomID        // remote: the peer's domain and port
	peerPort Port
	gone     bool // a peer was bound and has closed or died

	// Guarded by Handle.qmu.
	masked bool
	fired  bool // fired while masked: Unmask delivers it
}

func (p *port) close() {
	p.ev.Close()
	if p.bell >= 0 {
		unix.Close(p.bell)
	}
}

// domPorts is per domain: which handle owns which port, so notifications
// reach the right one. Changed only on the connection's reader goroutine.
type domPorts struct {
	mu    sync.Mutex
	owner map[Port]*Handle
}

type domPortsKey struct{}

// Handle is a set of bound ports, like an open /dev/xen/evtchn.
type Handle struct {
	c  *hv.Conn
	dp *domPorts
	ep *shm.Epoll
	ln *link.State

	// mu guards ports and closed; a send holds it shared while it writes
	// a doorbell, so that a doorbell is never closed under it.
	mu     sync.RWMutex
	ports  map[Port]*port
	closed bool

	// wmu serialises waits on the epoll set and guards evs.
	wmu sync.Mutex
	evs [8]unix.EpollEvent

	// qmu guards queue and every port's masked and fired.
	qmu   sync.Mutex
	queue []Port // fired and unmasked, not yet returned

	// self is in the epoll set so that Fd turns readable when Unmask
	// delivers an event that fired while masked.
	self *shm.EventFD
}

// Tokens in the epoll set besides ports (which are positive): self, and
// the domain's links.
const (
	selfToken = -1
	linkToken = -2
)

// Open returns a new handle of the domain behind c (hv.Self() for this
// process's own).
func Open(c *hv.Conn) (*Handle, error) {
	ep, err := shm.NewEpoll()
	if err != nil {
		return nil, err
	}
	self, err := shm.NewEventFD()
	if err != nil {
		ep.Close()
		return nil, err
	}
	ln := link.For(c)
	if err := errors.Join(ep.Add(self.Fd(), unix.EPOLLIN, selfToken), ln.Watch(ep.Fd(), linkToken)); err != nil {
		ep.Close()
		self.Close()
		return nil, err
	}
	dp := c.Value(domPortsKey{}, func() any {
		dp := &domPorts{owner: map[Port]*Handle{}}
		c.Handle(hypercall.NotifyEvtchnConnect, dp.connect)
		c.Handle(hypercall.NotifyEvtchnDisconnect, dp.disconnect)
		c.Handle(hypercall.NotifyEvtchnRelease, dp.release)
		return dp
	}).(*domPorts)
	return &Handle{c: c, dp: dp, ep: ep, ln: ln, self: self, ports: map[Port]*port{}}, nil
}

// OpenSelf opens a handle of this process's domain.
func OpenSelf() (*Handle, error) {
	c, err := hv.Self()
	if err != nil {
		return nil, err
	}
	return Open(c)
}

// Fd is a descriptor for poll/epoll: readable once a port has fired (or a
// masked one, after which Pending returns ErrNoEvent).
func (h *Handle) Fd() int { return h.ep.Fd() }

// DomID is the id of the handle's domain.
func (h *Handle) DomID() DomID { return h.c.DomID() }

func (dp *domPorts) handle(p Port) *Handle {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return dp.owner[p]
}

// connect installs a doorbell a peer's bind brought.
func (dp *domPorts) connect(m hypercall.Msg, fds []int) {
	h := dp.handle(Port(m.Port))
	if h == nil {
		closeFDs(fds)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.ports[Port(m.Port)]
	if p == nil {
		closeFDs(fds)
		return
	}
	if p.bell >= 0 {
		unix.Close(p.bell)
	}
	p.bell, p.gone = -1, false
	h.setPeerLocked(Port(m.Port), p, m)
	if len(fds) > 0 {
		p.bell = fds[0]
		closeFDs(fds[1:])
	}
}

// setPeerLocked records where p's sends go, from a bind's reply or a
// connect notification: a remote peer is reached on the link to its
// domain.
// Preconditions: h.mu held.
func (h *Handle) setPeerLocked(pn Port, p *port, m hypercall.Msg) {
	p.remote = m.Flags&hypercall.FlagRemote != 0
	if !p.remote {
		h.ln.UnbindPort(pn)
		return
	}
	p.peer, p.peerPort = DomID(m.Arg[0]), Port(m.Arg[1])
	h.ln.BindPort(pn, p.peer, p.peerPort, func() { h.kick(pn, p) })
}

// kick makes p pending, if it is still bound: the link calls it for
// events and updates from p's peer.
func (h *Handle) kick(pn Port, p *port) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.ports[pn] == p {
		shm.SignalHot(p.ev.Fd())
	}
}

// disconnect drops the doorbell of a port whose peer went away.
func (dp *domPorts) disconnect(m hypercall.Msg, fds []int) {
	closeFDs(fds)
	h := dp.handle(Port(m.Port))
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.ports[Port(m.Port)]; p != nil {
		if p.bell >= 0 {
			unix.Close(p.bell)
		}
		p.bell, p.remote, p.gone = -1, false, true
		h.ln.UnbindPort(Port(m.Port))
		// The agent's kick may have come first and been taken by a
		// waiter that then saw the port still bound and slept again:
		// kick once more, now that PeerGone says so.
		shm.SignalHot(p.ev.Fd())
	}
}

// release forgets a port the agent closed.
func (dp *domPorts) release(m hypercall.Msg, fds []int) {
	closeFDs(fds)
	if h := dp.handle(Port(m.Port)); h != nil {
		h.forget(Port(m.Port))
	}
}

// adopt records a port the agent just bound for this handle: fds are its
// eventfd and, for a local peer, the peer's doorbell. Runs on the reader
// goroutine.
func (h *Handle) adopt(r hypercall.Msg, fds []int) error {
	if r.Errno != 0 {
		closeFDs(fds)
		return nil
	}
	if len(fds) == 0 {
		return fmt.Errorf("evtchn: the agent bound port %d without its eventfd: %w", r.Port, syscall.EIO)
	}
	p := &port{ev: shm.EventFDFrom(fds[0]), bell: -1}
	if len(fds) > 1 {
		p.bell = fds[1]
		closeFDs(fds[2:])
	}
	pn := Port(r.Port)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		p.close()
		return ErrClosed
	}
	h.setPeerLocked(pn, p, r)
	// Added while already pending (a bind kicks its new port), it is
	// reported once.
	if err := h.ep.Add(p.ev.Fd(), unix.EPOLLIN|unix.EPOLLET, int32(pn)); err != nil {
		p.close()
		return err
	}
	if old := h.ports[pn]; old != nil { // cannot happen: the agent closed it first
		h.ep.Delete(old.ev.Fd())
		old.close()
	}
	h.ports[pn] = p
	h.dp.mu.Lock()
	h.dp.owner[pn] = h
	h.dp.mu.Unlock()
	return nil
}

// bind runs a binding request and adopts the port it returns.
func (h *Handle) bind(m hypercall.Msg) (Port, error) {
	var aerr error
	r, err := h.c.CallApply(m, func(r hypercall.Msg, fds []int) { aerr = h.adopt(r, fds) })
	if err != nil {
		return 0, fmt.Errorf("evtchn: %w", err)
	}
	if aerr != nil {
		h.c.Call(hypercall.Msg{Op: hypercall.OpEvtchnClose, Port: r.Port})
		return 0, aerr
	}
	return Port(r.Port), nil
}

// AllocUnbound is xenevtchn_bind_unbound_port: a new port that only
// remote may bind to.
func (h *Handle) AllocUnbound(remote DomID) (Port, error) {
	return h.bind(hypercall.Msg{Op: hypercall.OpEvtchnAllocUnbound, Dom: uint16(remote)})
}

// BindInterdomain is xenevtchn_bind_interdomain: bind a new local port to
// remote's port rport, which remote allocated unbound for this domain.
// The new port starts pending.
func (h *Handle) BindInterdomain(remote DomID, rport Port) (Port, error) {
	return h.bind(hypercall.Msg{Op: hypercall.OpEvtchnBindInterdomain, Dom: uint16(remote), Port: uint32(rport)})
}

// BindIPI binds a port on which the domain signals itself.
func (h *Handle) BindIPI() (Port, error) {
	return h.bind(hypercall.Msg{Op: hypercall.OpEvtchnBindIPI})
}

// Notify is xenevtchn_notify: make the peer of p pending. For a local
// peer this is one write to its doorbell. Sends on an unbound port are
// dropped, as in Xen.
func (h *Handle) Notify(p Port) error {
	h.ln.ApplyArrived() // an entry into the library (free when nothing waits)
	h.mu.RLock()
	pt := h.ports[p]
	if pt == nil {
		h.mu.RUnlock()
		return ErrNotBound
	}
	if pt.bell >= 0 {
		err := shm.SignalHot(pt.bell)
		h.mu.RUnlock()
		return err
	}
	remote, peer, peerPort := pt.remote, pt.peer, pt.peerPort
	h.mu.RUnlock()
	if remote {
		// Release, then the event, on the link: one write.
		if err := h.ln.Send(peer, peerPort); err != link.ErrNoLink {
			return err
		}
	}
	if _, _, err := h.c.Call(hypercall.Msg{Op: hypercall.OpEvtchnSend, Port: uint32(p)}); err != nil {
		return fmt.Errorf("evtchn: %w", err)
	}
	return nil
}

// Pending is xenevtchn_pending on a non-blocking handle: a port that has
// fired, now masked (Unmask it when done); or ErrNoEvent.
func (h *Handle) Pending() (Port, error) { return h.wait(0) }

// Wait blocks until a port fires, or for at most timeout (negative: no
// limit), and then behaves as Pending.
func (h *Handle) Wait(timeout time.Duration) (Port, error) {
	msec := -1
	if timeout >= 0 {
		msec = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	return h.wait(msec)
}

func (h *Handle) wait(msec int) (Port, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	var deadline time.Time
	if msec > 0 {
		deadline = time.Now().Add(time.Duration(msec) * time.Millisecond)
	}
	linked := false
	hot := HotWait // what this call may still spend waiting hot
	for {
		if linked {
			// Frames arrived: apply them; events for this handle's
			// ports go straight into its queue.
			h.ln.AcquireFor(h.fire)
		} else {
			h.ln.ApplyArrived()
		}
		if p, ok := h.next(); ok {
			return p, nil
		}
		var done func()
		if msec != 0 {
			h.ln.ReleaseAll() // before blocking
			done = h.ln.Blocking()
		}
		n, err := h.epollWait(msec, &hot)
		if done != nil {
			done()
		}
		if err != nil {
			if h.isClosed() {
				return 0, ErrClosed
			}
			return 0, err
		}
		if n == 0 {
			return 0, ErrNoEvent
		}
		linked = h.collect(h.evs[:n])
		if msec > 0 {
			if msec = int(time.Until(deadline) / time.Millisecond); msec <= 0 {
				msec = 0
			}
		}
	}
}

// HotWait is how long a Wait first blocks without giving its thread's P
// back to the Go scheduler (see shm.Epoll.WaitHot): an event channel's
// round trip then costs what a raw eventfd ping-pong does, instead of
// twice the scheduler's hand-off. Longer waits block normally.
var HotWait = 2 * time.Millisecond

// epollWait waits up to msec (-1: forever) for ports to fire, hot for
// at most *hot of it, which it reduces by what it spent: one Wait call
// holds its P for HotWait in all, however many wakes bring nothing for
// this handle (another handle's link frames wake every handle of the
// domain; a budget per wake would let two waiters starve the domain's
// other goroutines).
// Preconditions: h.wmu held.
func (h *Handle) epollWait(msec int, hot *time.Duration) (int, error) {
	budget := int(*hot / time.Millisecond)
	if msec == 0 || budget <= 0 {
		return h.ep.Wait(h.evs[:], msec)
	}
	if msec > 0 {
		budget = min(budget, msec)
	}
	start := time.Now()
	n, err := h.ep.WaitHot(h.evs[:], budget)
	spent := time.Since(start)
	*hot -= spent
	if n != 0 || err != nil {
		return n, err
	}
	if msec > 0 {
		if msec -= int(spent / time.Millisecond); msec <= 0 {
			return h.ep.Wait(h.evs[:], 0)
		}
	}
	return h.ep.Wait(h.evs[:], msec)
}

// next takes the first queued port that is still bound and unmasked, and
// masks it.
func (h *Handle) next() (Port, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.qmu.Lock()
	defer h.qmu.Unlock()
	for len(h.queue) > 0 {
		pn := h.queue[0]
		h.queue = h.queue[1:]
		if p := h.ports[pn]; p != nil {
			if p.masked {
				p.fired = true
				continue
			}
			p.masked = true
			return pn, true
		}
	}
	return 0, false
}

// collect sorts reported ports into the queue, or marks masked ones as
// fired, and reports whether the links have frames.
// Preconditions: h.wmu held.
func (h *Handle) collect(evs []unix.EpollEvent) (linked bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.qmu.Lock()
	defer h.qmu.Unlock()
	for _, ev := range evs {
		switch ev.Fd {
		case selfToken:
			h.self.Drain()
			continue
		case linkToken:
			// Frames arrived: the next round's acquire applies them and
			// delivers their events.
			linked = true
			continue
		}
		h.firedLocked(Port(ev.Fd))
	}
	return linked
}

// firedLocked queues a port that fired, or marks it fired if masked.
// Preconditions: h.mu (read) and h.qmu held.
func (h *Handle) firedLocked(pn Port) bool {
	p := h.ports[pn]
	switch {
	case p == nil: // closed meanwhile, or another handle's
		return false
	case p.masked:
		p.fired = true
	case !slices.Contains(h.queue, pn):
		h.queue = append(h.queue, pn)
	}
	return true
}

// fire takes an event a link brought for one of this handle's ports,
// instead of its eventfd; false for another handle's port.
// Preconditions: h.wmu held (the waiting thread).
func (h *Handle) fire(pn Port) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.qmu.Lock()
	defer h.qmu.Unlock()
	return h.firedLocked(pn)
}

func (h *Handle) isClosed() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.closed
}

// Unmask is xenevtchn_unmask: p may fire again, and does at once if it
// fired while masked.
func (h *Handle) Unmask(p Port) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	pt := h.ports[p]
	if pt == nil {
		return ErrNotBound
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	pt.masked = false
	if !pt.fired {
		return nil
	}
	pt.fired = false
	h.queue = append(h.queue, p)
	return h.self.Signal() // for whoever polls Fd
}

// Mask stops p from firing; sends still make it pending, and Unmask
// delivers that.
func (h *Handle) Mask(p Port) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	pt := h.ports[p]
	if pt == nil {
		return ErrNotBound
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	pt.masked = true
	return nil
}

// IsPending reports whether p has fired and not yet been returned by
// Pending or Wait, masked or not.
func (h *Handle) IsPending(p Port) (bool, error) {
	h.ln.Acquire()
	h.wmu.Lock()
	defer h.wmu.Unlock()
	n, err := h.ep.Wait(h.evs[:], 0)
	if err != nil {
		return false, err
	}
	h.collect(h.evs[:n])
	h.mu.RLock()
	defer h.mu.RUnlock()
	pt := h.ports[p]
	if pt == nil {
		return false, ErrNotBound
	}
	h.qmu.Lock()
	defer h.qmu.Unlock()
	return pt.fired || slices.Contains(h.queue, p), nil
}

// Unbind is xenevtchn_unbind: close p. An interdomain peer's port becomes
// unbound again.
func (h *Handle) Unbind(p Port) error {
	h.mu.RLock()
	ok := h.ports[p] != nil
	h.mu.RUnlock()
	if !ok {
		return ErrNotBound
	}
	_, err := h.c.CallApply(hypercall.Msg{Op: hypercall.OpEvtchnClose, Port: uint32(p)}, func(r hypercall.Msg, fds []int) {
		closeFDs(fds)
		if r.Errno == 0 {
			h.forget(p)
		}
	})
	if err != nil {
		return fmt.Errorf("evtchn: %w", err)
	}
	return nil
}

// forget drops a closed port's state.
func (h *Handle) forget(pn Port) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.ports[pn]
	if p == nil {
		return
	}
	h.ep.Delete(p.ev.Fd())
	p.close()
	delete(h.ports, pn)
	if p.remote {
		h.ln.UnbindPort(pn)
	}
	h.dp.mu.Lock()
	if h.dp.owner[pn] == h {
		delete(h.dp.owner, pn)
	}
	h.dp.mu.Unlock()
}

// PeerGone reports whether p's peer, once bound, has closed its port or
// died (or its host did): p is unbound again, as Status would say, known
// without asking the agent.
func (h *Handle) PeerGone(p Port) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	pt := h.ports[p]
	return pt == nil || pt.gone
}

// The memory model's hooks (DESIGN.md §3, guest/link), for code that
// shares pages with domains of other hosts without going through Notify
// and Wait, such as a ring polling its indices.

// Acquire applies the page updates that arrived from other hosts.
func (h *Handle) Acquire() { h.ln.Acquire() }

// Release ships what changed in the pages shared with p's peer, if it is
// on another host, without an event.
func (h *Handle) Release(p Port) {
	h.mu.RLock()
	pt := h.ports[p]
	// A disconnect rewrites remote and peer under h.mu.
	remote := pt != nil && pt.remote
	var peer DomID
	if remote {
		peer = pt.peer
	}
	h.mu.RUnlock()
	if remote {
		h.ln.Release(peer)
	}
}

// View runs read while no page update from another host is applied (by
// another thread's acquire): a ring's indices and the data they cover
// are then seen together. read must not call into the library.
func (h *Handle) View(read func()) { h.ln.View(read) }

// Explicit declares that every write to b, memory shared across hosts,
// is reported with Wrote, so releases ship those bytes and need not
// compare whole pages.
func (h *Handle) Explicit(b []byte) { h.ln.Explicit(b) }

// Wrote reports a write to memory declared Explicit.
func (h *Handle) Wrote(b []byte) { h.ln.Wrote(b) }

// Status is EVTCHNOP_status for one of the domain's own ports.
type Status = abi.EvtchnStatus

// Status reports p's state as the agent sees it: EVTCHNSTAT_unbound after
// the peer closed or died, EVTCHNSTAT_closed once p is closed.
func (h *Handle) Status(p Port) (Status, error) {
	r, fds, err := h.c.Call(hypercall.Msg{Op: hypercall.OpEvtchnStatus, Dom: uint16(DOMID_SELF), Port: uint32(p)})
	closeFDs(fds)
	if err != nil {
		return Status{}, fmt.Errorf("evtchn: %w", err)
	}
	return abi.DecodeEvtchnStatus(r.Data)
}

// Ports lists the ports bound through this handle.
func (h *Handle) Ports() []Port {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]Port, 0, len(h.ports))
	for p := range h.ports {
		out = append(out, p)
	}
	return out
}

// Close unbinds every port of the handle and releases it.
func (h *Handle) Close() error {
	for _, p := range h.Ports() {
		h.Unbind(p)
	}
	h.mu.Lock()
	h.closed = true
	for pn, p := range h.ports { // ports whose unbind failed (connection gone)
		h.ep.Delete(p.ev.Fd())
		p.close()
		delete(h.ports, pn)
	}
	h.mu.Unlock()
	h.ln.Unwatch(h.ep.Fd())
	h.self.Close()
	return h.ep.Close()
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
