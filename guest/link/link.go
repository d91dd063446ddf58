package link

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/hv"
	"shi/internal/abi"
	"shi/internal/hypercall"
)

type (
	// DomID is a domain id.
	DomID = abi.DomID
	// Port is an event-channel port.
	Port = abi.EvtchnPort
	// Ref is a grant reference.
	Ref = abi.GrantRef
)

const pageSize = abi.PAGE_SIZE

// FlushInterval is how often the background goroutine ships changes that
// no release shipped, and drains links nobody reads: how long a write to
// a page shared across hosts stays local at most, when its writer never
// enters the library. It backs off (to 64 times as long) while nothing
// changes. Set it before the first link arrives.
var FlushInterval = time.Millisecond

// Debug makes the library say on stderr why each link ends.
var Debug = os.Getenv("SHI_LINK_DEBUG") != ""

// ErrNoLink means there is no working link to a domain: the caller falls
// back to sending through its agent.
var ErrNoLink = errors.New("link: no link to that domain")

// rbufSize is each link's input buffer: many frames per read.
const rbufSize = 256 << 10

// State is one domain's links and the pages it shares across them.
type State struct {
	c      *hv.Conn
	snap   []byte       // the background flush's snapshot of diff-mode pages (under mu)
	ep     int          // epoll set of the links, level-triggered; see Fd
	nlinks atomic.Int32 // working links: zero makes Acquire free
	// npending counts rels with committed updates not applied yet, so
	// ApplyArrived is free when there are none.
	npending atomic.Int32
	// waiting counts threads blocked in an evtchn wait: they watch the
	// links, so the background leaves the links to them.
	waiting atomic.Int32

	// view is held for writing while updates are applied, and for reading
	// by the ring code while it reads indices and the data they cover
	// (View): the runs of a release are applied in page order, not in the
	// order the peer wrote them, so another thread must not look halfway.
	// Taken before mu.
	view sync.RWMutex

	// mu guards everything below, and every link's buffers and rel.
	mu       sync.Mutex
	links    map[DomID]*peerLink
	ports    map[Port]portBinding
	rels     map[relKey]*rel
	diffing  relIndex          // rels with a twin: a release diffs them
	marked   relIndex          // rels with marked bytes: a release ships them
	pending  relIndex          // rels with committed updates not applied yet
	pages    map[uintptr]*page // by the address of each view of the page
	explicit map[uintptr]bool  // pages whose writes are reported (Explicit)
	nextGen  uint32
	watchers map[int]int32 // epoll sets (of evtchn handles) that watch the links, with their token
	bg       bool          // the background goroutine runs
	forged   int           // refused updates, for log rate limiting
}

// portBinding is a local port bound to a port of a remote domain.
type portBinding struct {
	peer     DomID
	peerPort Port
	kick     func() // makes the local port pending
}

// peerLink is the link to one remote domain.
type peerLink struct {
	peer DomID
	fd   int
	dead bool

	// Guarded by State.mu.
	rbuf   []byte
	r0, r1 int    // unread input is rbuf[r0:r1]
	out    []byte // frames queued for writing, in order
	spans  []span // page bytes shipped where they are, between out's bytes
	extern int    // bytes in spans
	spare  []byte
	early  map[Port]bool // events for ports not bound yet (see BindPort)
	staged []*rel        // rels with updates of a release not committed yet

	wmu sync.Mutex // serialises writes to fd; before State.mu, never under it
}

type stateKey struct{}

// For returns the State of the domain behind c, creating it (and
// registering for the agent's link notifications) on first use.
func For(c *hv.Conn) *State {
	return c.Value(stateKey{}, func() any {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			panic(fmt.Sprintf("link: epoll_create1: %v", err)) // out of descriptors at start
		}
		s := newState(c, ep)
		c.Handle(hypercall.NotifyLink, s.adopt)
		if Debug {
			go s.dumpOnSignal()
		}
		return s
	}).(*State)
}

func newState(c *hv.Conn, ep int) *State {
	return &State{c: c, ep: ep, links: map[DomID]*peerLink{}, ports: map[Port]portBinding{},
		rels: map[relKey]*rel{}, diffing: relIndex{}, marked: relIndex{}, pending: relIndex{},
		pages: map[uintptr]*page{}, explicit: map[uintptr]bool{}, watchers: map[int]int32{}}
}

// Blocking brackets a wait on an epoll set that watches the links: the
// background goroutine does not drain links while a thread waits on them
// (it would take their events and kick them through eventfds: a second
// wake-up). Call the returned function when the wait returns.
func (s *State) Blocking() func() {
	s.waiting.Add(1)
	return func() { s.waiting.Add(-1) }
}

// Watch adds every link, now and later, to the epoll set epfd with token
// (level-triggered): a thread waiting on it wakes when frames arrive, and
// acquires. Directly, not through a nested epoll set: one wake-up less.
func (s *State) Watch(epfd int, token int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, l.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: token}); err != nil {
			return err
		}
	}
	s.watchers[epfd] = token
	return nil
}

// Unwatch undoes Watch.
func (s *State) Unwatch(epfd int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.watchers, epfd)
	for _, l := range s.links {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	}
}

// Fd is readable while a link has input: evtchn handles watch it, so a
// thread blocked in Wait wakes for frames and acquires them.
func (s *State) Fd() int { return s.ep }

// Active reports whether the domain has a working link.
func (s *State) Active() bool { return s.nlinks.Load() > 0 }

// adopt takes a link the agent handed over (NotifyLink). It runs on the
// connection's reader goroutine.
func (s *State) adopt(m hypercall.Msg, fds []int) {
	if len(fds) != 1 {
		closeFDs(fds)
		return
	}
	fd := fds[0]
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return
	}
	peer := DomID(m.Dom)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.links[peer]; old != nil {
		s.killLocked(old, "replaced by a new link") // after a partition healed
	}
	l := &peerLink{peer: peer, fd: fd, rbuf: make([]byte, rbufSize), early: map[Port]bool{}}
	if err := unix.EpollCtl(s.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return
	}
	for epfd, token := range s.watchers {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: token})
	}
	s.links[peer] = l
	s.nlinks.Add(1)
	if !s.bg {
		s.bg = true
		go s.background()
	}
}

// killLocked drops a link whose peer is gone or broke the protocol, and
// says why on stderr (the agent logs a domain's output).
// Preconditions: s.mu held.
func (s *State) killLocked(l *peerLink, why string) {
	if l.dead {
		return
	}
	if Debug {
		fmt.Fprintf(os.Stderr, "shi link: link to dom%d ends: %s\n", l.peer, why)
	}
	l.dead = true
	l.out, l.spans, l.extern = nil, nil, 0
	if s.links[l.peer] == l {
		delete(s.links, l.peer)
	}
	s.nlinks.Add(-1)
	unix.EpollCtl(s.ep, unix.EPOLL_CTL_DEL, l.fd, nil)
	for epfd := range s.watchers {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, l.fd, nil)
	}
	// Shut down now (a blocked writer fails at once); close once no
	// writer can still use the descriptor number.
	unix.Shutdown(l.fd, unix.SHUT_RDWR)
	go func() {
		l.wmu.Lock()
		unix.Close(l.fd)
		l.wmu.Unlock()
	}()
}

// maxPorts bounds the port numbers an early event is kept for.
const maxPorts = 1 << 17

// BindPort records that local port p is bound to peerPort of peer, a
// domain of another host; kick makes p pending. An event the peer sent
// before the agent's notice of the bind arrived is delivered now.
func (s *State) BindPort(p Port, peer DomID, peerPort Port, kick func()) {
	s.mu.Lock()
	s.ports[p] = portBinding{peer: peer, peerPort: peerPort, kick: kick}
	early := false
	if l := s.links[peer]; l != nil && l.early[p] {
		delete(l.early, p)
		early = true
	}
	s.mu.Unlock()
	if early {
		go kick() // the caller holds its handle's lock, which kick takes
	}
}

// UnbindPort forgets p.
func (s *State) UnbindPort(p Port) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ports, p)
}

// Notify sends an event on local port p if it is bound across hosts,
// releasing first; ok is false if p is not (the caller sends locally or
// through the agent).
func (s *State) Notify(p Port) (ok bool, err error) {
	s.mu.Lock()
	b, bound := s.ports[p]
	s.mu.Unlock()
	if !bound {
		return false, nil
	}
	return true, s.Send(b.peer, b.peerPort)
}

// Send releases what changed in the pages shared with peer and sends an
// event to peer's port, in that order, on their link. ErrNoLink means
// there is none (the caller falls back to its agent).
func (s *State) Send(peer DomID, peerPort Port) error {
	s.mu.Lock()
	l := s.links[peer]
	if l == nil {
		s.mu.Unlock()
		return ErrNoLink
	}
	s.releaseLocked(l)
	l.out = header{typ: frameEvent, ref: uint32(peerPort)}.append(l.out)
	s.mu.Unlock()
	s.flush(l)
	return nil
}

// Release ships what changed in the pages shared with peer, without an
// event; the updates' arrival raises events there.
func (s *State) Release(peer DomID) {
	if !s.Active() {
		return
	}
	s.mu.Lock()
	l := s.links[peer]
	if l == nil {
		s.mu.Unlock()
		return
	}
	s.releaseLocked(l)
	queued := l.queued()
	s.mu.Unlock()
	if queued {
		s.flush(l)
	}
}

// ReleaseAll ships what changed in every page shared across hosts: a
// thread does it before it blocks.
func (s *State) ReleaseAll() {
	if !s.Active() {
		return
	}
	var ls []*peerLink
	s.mu.Lock()
	for _, l := range s.links {
		s.releaseLocked(l)
		if l.queued() {
			ls = append(ls, l)
		}
	}
	s.mu.Unlock()
	for _, l := range ls {
		s.flush(l)
	}
}

// Acquire applies every frame that has arrived, in this thread, and
// makes the ports they concern pending. It reads every link.
func (s *State) Acquire() { s.acquire(true, nil) }

// AcquireFor is Acquire for a thread that waits on some ports: the ports
// the frames make pending are first offered to direct, which takes those
// it can deliver itself (no eventfd write, no second wake-up); the others
// are kicked.
func (s *State) AcquireFor(direct func(Port) bool) { s.acquire(true, direct) }

// ApplyArrived applies the frames already read (by the background or
// another thread), without reading the links: an entry into the library
// whose caller will not look at the links (a send; a wait whose epoll
// set includes them, and drains them when they are readable).
func (s *State) ApplyArrived() {
	if s.npending.Load() > 0 {
		s.acquire(false, nil)
	}
}

func (s *State) acquire(drain bool, direct func(Port) bool) {
	if !s.Active() {
		return
	}
	in := inbox{wait: true, direct: direct}
	s.view.Lock()
	s.mu.Lock()
	for _, set := range s.pending {
		for r := range set {
			r.applyPending()
		}
	}
	if drain {
		for _, l := range s.links {
			s.drainLocked(l, true, &in)
		}
	}
	s.mu.Unlock()
	s.view.Unlock()
	in.deliver(s)
}

// View runs read, which reads memory shared across hosts (a ring's
// indices and the data they cover), while no update is being applied:
// what it sees of each release is all or nothing. read must not call
// into the library.
func (s *State) View(read func()) {
	s.view.RLock()
	defer s.view.RUnlock()
	read()
}

// flush writes l's queued frames, waiting for room as a blocking write
// would. Writers take turns under wmu, each taking everything queued so
// far, so frames go out in queue order.
func (s *State) flush(l *peerLink) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	s.flushWmu(l, true)
}

// flushWmu writes l's queued frames; unless wait, it writes only what
// fits now and queues the rest again, in front.
// Preconditions: l.wmu held.
func (s *State) flushWmu(l *peerLink, wait bool) {
	s.mu.Lock()
	buf, spans := l.out, l.spans
	l.out, l.spare, l.spans, l.extern = l.spare[:0], nil, nil, 0
	dead := l.dead
	s.mu.Unlock()
	if dead || len(buf)+len(spans) == 0 {
		return
	}
	iov := make([][]byte, 0, 2*len(spans)+1)
	prev := 0
	for _, sp := range spans {
		if sp.at > prev {
			iov = append(iov, buf[prev:sp.at])
		}
		iov = append(iov, sp.b)
		prev = sp.at
	}
	if prev < len(buf) {
		iov = append(iov, buf[prev:])
	}
	rest, err := writev(l.fd, iov, wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.killLocked(l, "write: "+err.Error())
	case len(rest) > 0:
		// What did not fit goes first again, as bytes of its own (the
		// spans of what is queued now move behind it).
		var b []byte
		for _, v := range rest {
			b = append(b, v...)
		}
		for i := range l.spans {
			l.spans[i].at += len(b)
		}
		l.out = append(b, l.out...)
	case cap(buf) <= 4<<20:
		l.spare = buf[:0]
	}
}

// span is page bytes shipped where they are: b goes before out[at:].
type span struct {
	at int
	b  []byte
}

// minSpan is the smallest run shipped from the page itself rather than
// copied into the queue.
const minSpan = 1024

// queued reports whether l has frames to write.
// Preconditions: s.mu held.
func (l *peerLink) queued() bool { return len(l.out) > 0 || len(l.spans) > 0 }

// outLen is the bytes queued on l.
// Preconditions: s.mu held.
func (l *peerLink) outLen() int { return len(l.out) + l.extern }

// writev writes iov to a non-blocking socket; if wait, all of it, waiting
// for room as a blocking write would; else it returns what did not fit.
func writev(fd int, iov [][]byte, wait bool) ([][]byte, error) {
	for len(iov) > 0 {
		batch := iov[:min(len(iov), 1024)] // IOV_MAX
		n, err := rawWritev(fd, batch)
		switch {
		case err == unix.EAGAIN && !wait:
			return iov, nil
		case err == unix.EAGAIN:
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
				return iov, err
			}
			continue
		case err == unix.EINTR:
			continue
		case err != nil:
			return iov, err
		}
		for n > 0 {
			if n >= len(iov[0]) {
				n -= len(iov[0])
				iov = iov[1:]
			} else {
				iov[0] = iov[0][n:]
				n = 0
			}
		}
	}
	return nil, nil
}

// inbox is what a drain found for after the lock: ports to make pending
// and requests to the agent.
type inbox struct {
	kick   map[Port]func()
	posts  []hypercall.Msg
	wait   bool            // make the requests and wait for their replies (an acquire)
	direct func(Port) bool // see AcquireFor
}

func (in *inbox) raise(p Port, kick func()) {
	if in.kick == nil {
		in.kick = map[Port]func(){}
	}
	in.kick[p] = kick
}

// deliver sends requests and kicks ports, without s.mu: a request may
// wait for room on the agent connection. An acquire waits for the
// replies, so that a grant whose mapper fenced is unpinned before the
// events that followed the fence are seen (the granter may then end it).
func (in *inbox) deliver(s *State) {
	for _, m := range in.posts {
		if in.wait {
			s.c.Call(m)
		} else {
			s.c.Post(m)
		}
	}
	for p, k := range in.kick {
		if in.direct == nil || !in.direct(p) {
			k()
		}
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// logf reports a peer's misbehaviour on stderr (the agent logs a domain's
// output), rate-limited.
// Preconditions: s.mu held.
func (s *State) logf(format string, args ...any) {
	s.forged++
	if s.forged <= 20 || s.forged%1000 == 0 {
		fmt.Fprintf(os.Stderr, "shi link: "+format+"\n", args...)
	}
}

// dumpOnSignal prints the State on stderr at each SIGUSR1: with Debug
// set, a stuck domain says what it holds and what it has not shipped.
func (s *State) dumpOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	for range ch {
		fmt.Fprintf(os.Stderr, "shi link: state\n%s", s)
	}
}

// String describes the State for debugging: its links' buffers and the
// pages it shares.
func (s *State) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for peer, l := range s.links {
		fmt.Fprintf(&b, "link dom%d: fd %d dead %v in %d..%d out %d staged %d early %v\n", peer, l.fd, l.dead, l.r0, l.r1, len(l.out), len(l.staged), l.early)
	}
	for p, pb := range s.ports {
		fmt.Fprintf(&b, "port %d -> dom%d:%d\n", p, pb.peer, pb.peerPort)
	}
	fmt.Fprintf(&b, "waiting %d background %v pending %d\n", s.waiting.Load(), s.bg, s.npending.Load())
	for k, r := range s.rels {
		fmt.Fprintf(&b, "rel %+v gen %d ready %v revoked %v twin %v dirty %v stage %v pend %v explicit %v\n", k, r.gen, r.ready, r.revoked,
			r.twin != nil, !r.dirty.empty(), !r.stage.mask.empty(), !r.pend.mask.empty(), r.pg != nil && r.pg.explicit)
		if r.pg != nil && r.ready && !r.dropped {
			// The head of a page is where rings keep their indices.
			fmt.Fprintf(&b, "  page % x\n", r.pg.mem[:32])
			if r.twin != nil {
				fmt.Fprintf(&b, "  twin % x\n", r.twin[:32])
			}
		}
	}
	return b.String()
}
