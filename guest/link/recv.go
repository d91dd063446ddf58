package link

import (
	"bytes"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/hypercall"
)

// maxDrain bounds the bytes one drain of a link takes, so that a peer
// streaming without pause cannot keep an acquire from returning.
const maxDrain = 8 << 20

// drainLocked reads what l has and handles every complete frame: applied
// now when apply (an acquire, in the caller's thread), else kept as
// pending for the next acquire. Ports to kick and requests to post go
// into in.
// Preconditions: s.mu held.
func (s *State) drainLocked(l *peerLink, apply bool, in *inbox) {
	for taken := 0; !l.dead && taken < maxDrain; {
		if l.r0 > 0 && (l.r1 == l.r0 || len(l.rbuf)-l.r1 < headerSize+maxPayload) {
			l.r1 = copy(l.rbuf, l.rbuf[l.r0:l.r1])
			l.r0 = 0
		}
		n, err := rawRead(l.fd, l.rbuf[l.r1:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil || n == 0 {
			why := "end of stream"
			if err != nil {
				why = "read: " + err.Error()
			}
			s.killLocked(l, why) // the peer or its host went away
			return
		}
		short := n < len(l.rbuf)-l.r1
		l.r1 += n
		taken += n
		if !s.framesLocked(l, apply, in) || short {
			return // a short read emptied the socket: no EAGAIN read needed
		}
	}
}

// framesLocked handles the complete frames buffered on l; false if the
// link broke. A release's updates are staged until its commit, unless
// the commit is already buffered and this is an acquire: then they are
// applied straight from the buffer (the whole release is applied before
// the acquire returns either way; the updates of one release touch
// distinct pages, so their order does not matter).
// Preconditions: s.mu held.
func (s *State) framesLocked(l *peerLink, apply bool, in *inbox) bool {
	committed := l.r0 // the end of the last commit buffered
	for off := l.r0; off+headerSize <= l.r1; {
		h, err := parseHeader(l.rbuf[off:])
		if err != nil || off+headerSize+int(h.n) > l.r1 {
			break
		}
		off += headerSize + int(h.n)
		if h.typ == frameCommit {
			committed = off
		}
	}
	updated := false
	for l.r1-l.r0 >= headerSize {
		h, err := parseHeader(l.rbuf[l.r0:])
		if err != nil {
			s.logf("link to dom%d: %v; dropping it", l.peer, err)
			s.killLocked(l, err.Error())
			return false
		}
		if l.r1-l.r0 < headerSize+int(h.n) {
			break
		}
		if h.typ == frameUpdate && l.r0 >= committed && len(l.staged) == 0 && l.r1-l.r0 < len(l.rbuf)/2 {
			// A release whose commit has not arrived: wait for the rest
			// in the buffer rather than stage it (three copies instead of
			// one). A release too large for half the buffer is staged.
			break
		}
		payload := l.rbuf[l.r0+headerSize : l.r0+headerSize+int(h.n)]
		l.r0 += headerSize + int(h.n)
		switch h.typ {
		case frameEvent:
			if b, ok := s.ports[Port(h.ref)]; ok && b.peer == l.peer {
				in.raise(Port(h.ref), b.kick)
			} else if h.ref < maxPorts {
				// The agent's notice that the port is bound may come after
				// the peer's first event: keep it for BindPort.
				l.early[Port(h.ref)] = true
			}
		case frameUpdate:
			if err := checkRuns(payload); err != nil {
				s.logf("link to dom%d: %v; dropping it", l.peer, err)
				s.killLocked(l, err.Error())
				return false
			}
			r := s.rels[relKey{l.peer, Ref(h.ref), h.dir == toGranter}]
			switch {
			case r == nil || r.gen != h.gen || !r.ready || r.revoked:
				// A map that ended, or one generation too old: the
				// fence or the unmap raced with it.
			case h.dir == toGranter && r.readonly:
				s.logf("dom%d wrote ref %d, which it maps read-only: update refused", l.peer, h.ref)
			case apply && l.r0 <= committed:
				r.applyPending()
				r.apply(payload)
				updated = true
			default:
				r.stage.put(payload)
				l.staged = append(l.staged, r)
			}
		case frameCommit:
			for _, r := range l.staged {
				if r.dropped {
					continue
				}
				r.pend.take(&r.stage)
				if s.pending.add(r) {
					s.npending.Add(1)
				}
				if apply {
					r.applyPending()
				}
			}
			updated = updated || len(l.staged) > 0
			l.staged = l.staged[:0]
		case framePage:
			if r := s.rels[relKey{l.peer, Ref(h.ref), false}]; r != nil && r.gen == h.gen && !r.ready && !r.revoked {
				if err := r.memLocked(s); err != nil {
					s.logf("no memory for a replica of dom%d ref %d: %v", l.peer, h.ref, err)
					r.revoked = true
					break
				}
				copy(r.pg.mem, payload)
				if !r.readonly && !r.pg.explicit {
					s.setTwin(r, bytes.Clone(payload))
				}
				r.ready = true
			}
		case frameFence:
			if r := s.rels[relKey{l.peer, Ref(h.ref), true}]; r != nil && r.gen == h.gen {
				// The mapper is done: what the background drained of its
				// last writes goes into the page now, even outside an
				// acquire, since the grant may end once it is unpinned.
				r.applyPending()
				s.dropRel(r)
			}
			// Everything the mapper wrote under that generation is in:
			// the agent may unpin it.
			in.posts = append(in.posts, hypercall.Msg{Op: hypercall.OpGnttabRemoteUnpin, Ref: h.ref,
				Dom: uint16(l.peer), Arg: [4]uint32{h.gen}})
		}
	}
	if updated {
		s.raiseLocked(l.peer, in)
	}
	return true
}

// raiseLocked makes every port bound to peer pending: updates arrived.
// Preconditions: s.mu held.
func (s *State) raiseLocked(peer DomID, in *inbox) {
	for p, b := range s.ports {
		if b.peer == peer {
			in.raise(p, b.kick)
		}
	}
}

// background ships changes nobody released and drains links nobody reads,
// every FlushInterval, backing off while there is nothing to do. It ends
// when the domain has no links left.
func (s *State) background() {
	wait := FlushInterval
	for {
		time.Sleep(wait)
		// A fence applies the mapper's last writes (see framesLocked).
		if !s.view.TryLock() {
			continue
		}
		if !s.mu.TryLock() {
			s.view.Unlock()
			continue // someone is in the library: they release and acquire
		}
		if len(s.links) == 0 {
			s.bg = false
			s.mu.Unlock()
			s.view.Unlock()
			return
		}
		var in inbox
		busy := false
		if s.waiting.Load() == 0 { // else a waiting thread drains
			for _, l := range s.links {
				before := l.r1
				s.drainLocked(l, false, &in)
				busy = busy || l.r1 != before
			}
		}
		var ls []*peerLink
		for _, l := range s.links {
			if s.releaseStableLocked(l) {
				busy = true
			}
			if l.queued() {
				ls = append(ls, l)
			}
		}
		s.mu.Unlock()
		s.view.Unlock()
		in.deliver(s)
		for _, l := range ls {
			// Never wait here: a writer holding wmu writes what is
			// queued, and a peer that reads nothing must not stop the
			// drains of every other link.
			if l.wmu.TryLock() {
				s.flushWmu(l, false)
				l.wmu.Unlock()
			}
		}
		if busy || len(in.kick) > 0 {
			wait = FlushInterval
		} else if wait < 64*FlushInterval {
			wait *= 2
		}
	}
}

// releaseStableLocked queues the changes of pages shared with l's peer
// that nobody is writing right now; it reports whether it found any.
// Reported writes go as they are (their writer reports them once done).
// Diff-mode pages go together or not at all, from one snapshot that read
// the same twice in a row: a program writes a ring's data, then its index
// on another page, and a page shipped without the ones written before it
// would show the peer an index over data it does not have.
// Preconditions: s.mu held.
func (s *State) releaseStableLocked(l *peerLink) bool {
	found, shipped := false, false
	for r := range s.marked[l.peer] {
		shipped = s.releaseRelLocked(l, r) || shipped
		found = true
	}
	var dirty []*rel
	size := 0
	for r := range s.diffing[l.peer] {
		if r.ready && !r.revoked && r.ships() && !bytes.Equal(r.twin, r.pg.mem) {
			dirty = append(dirty, r)
			size += len(r.pg.mem)
		}
	}
	if len(dirty) > 0 {
		found = true
		if cap(s.snap) < size {
			s.snap = make([]byte, size)
		}
		snap, off := s.snap[:size], 0
		for _, r := range dirty {
			off += copy(snap[off:], r.pg.mem)
		}
		stable, off := true, 0
		for _, r := range dirty {
			n := len(r.pg.mem)
			stable = stable && bytes.Equal(snap[off:off+n], r.pg.mem)
			off += n
		}
		if stable {
			off = 0
			for _, r := range dirty {
				n := len(r.pg.mem)
				shipped = s.releaseFromLocked(l, r, snap[off:off+n]) || shipped
				off += n
			}
		}
	}
	if shipped {
		l.out = header{typ: frameCommit}.append(l.out)
	}
	return found
}
