package link

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/shm"
)

// relKey names a page shared with a remote domain: the granter's ref,
// and which side of the grant this domain is.
type relKey struct {
	peer    DomID
	ref     Ref
	granter bool // this domain granted the page; the peer maps it
}

// relSet is a set of rels.
type relSet map[*rel]struct{}

// relIndex is sets of rels by peer.
type relIndex map[DomID]relSet

// add adds r, reporting whether it was not there.
func (m relIndex) add(r *rel) bool {
	set := m[r.key.peer]
	if set == nil {
		set = relSet{}
		m[r.key.peer] = set
	}
	_, had := set[r]
	set[r] = struct{}{}
	return !had
}

// del removes r, reporting whether it was there.
func (m relIndex) del(r *rel) bool {
	set := m[r.key.peer]
	if set == nil {
		return false
	}
	_, had := set[r]
	delete(set, r)
	if len(set) == 0 {
		delete(m, r.key.peer)
	}
	return had
}

// setTwin gives r a twin (nil: none), keeping the index of rels that diff.
// Preconditions: s.mu held.
func (s *State) setTwin(r *rel, twin []byte) {
	r.twin = twin
	if twin != nil {
		s.diffing.add(r)
	} else {
		s.diffing.del(r)
	}
}

// markRel marks bytes [off, off+n) of r's page as not yet shipped.
// Preconditions: s.mu held.
func (s *State) markRel(r *rel, off, n int) {
	r.dirty.set(off, n)
	if !r.inMarked {
		r.inMarked = true
		s.marked.add(r)
	}
}

// rel is a page shared with one remote domain.
type rel struct {
	s        *State
	key      relKey
	gen      uint32
	pg       *page
	twin     []byte // what the peer has seen; nil when writes are reported or never made
	dirty    bitmap // explicit mode: bytes not yet shipped to the peer
	readonly bool   // the peer may not write it (granter side), or we may not (replica)
	ready    bool   // a replica's first content has arrived
	revoked  bool   // the granter of a replica is gone
	refs     int    // maps of a replica, or remote maps of a grant

	// Updates received but not applied: stage holds a release whose
	// commit has not arrived, pend committed releases the background
	// drained, which the next acquire applies.
	stage, pend delta

	// A replica's memory: its memfd and the library's writable view.
	mfd *shm.Memfd
	m   *shm.Mapping

	dropped  bool // forgotten: its memory may be gone
	inMarked bool // in State.marked
}

// page is a local page shared across hosts: one of this domain's, or a
// replica, with every rel that shares it.
type page struct {
	mem      []byte // a writable view
	views    []uintptr
	rels     []*rel
	explicit bool
}

// pageAt returns the page whose writable view is mem, making it.
// Preconditions: s.mu held.
func (s *State) pageAt(mem []byte) *page {
	if pg := s.pages[addr(mem)]; pg != nil {
		return pg
	}
	pg := &page{mem: mem, views: []uintptr{addr(mem)}, explicit: s.explicit[addr(mem)]}
	s.pages[addr(mem)] = pg
	return pg
}

func (s *State) addRel(r *rel) {
	s.rels[r.key] = r
	r.pg.rels = append(r.pg.rels, r)
}

// dropRel forgets a rel, and its page once nothing shares it.
// Preconditions: s.mu held.
func (s *State) dropRel(r *rel) {
	r.dropped = true
	s.diffing.del(r)
	s.marked.del(r)
	r.inMarked = false
	if s.pending.del(r) {
		s.npending.Add(-1)
	}
	if s.rels[r.key] == r {
		delete(s.rels, r.key)
	}
	pg := r.pg
	if pg == nil {
		return
	}
	for i, x := range pg.rels {
		if x == r {
			pg.rels = append(pg.rels[:i], pg.rels[i+1:]...)
			break
		}
	}
	if len(pg.rels) == 0 {
		for _, v := range pg.views {
			if s.pages[v] == pg {
				delete(s.pages, v)
			}
		}
	}
}

// ---- The granter's side.

// Share starts sharing one of this domain's pages (mem, granted as ref)
// with mapper, a domain of another host that mapped it under generation
// gen: the page is twinned and its content sent to the mapper, whose map
// waits for it. It runs on the agent connection's reader goroutine.
func (s *State) Share(mapper DomID, ref Ref, gen uint32, mem []byte, readonly bool) error {
	s.mu.Lock()
	key := relKey{mapper, ref, true}
	r := s.rels[key]
	if r != nil && r.gen == gen {
		r.refs++ // mapped again by the same map generation
		s.mu.Unlock()
		return nil
	}
	if r != nil {
		s.dropRel(r) // an older generation whose fence is still on its way
	}
	l := s.links[mapper]
	if l == nil {
		s.mu.Unlock()
		return fmt.Errorf("link: no link to dom%d for its map of ref %d", mapper, ref)
	}
	pg := s.pageAt(mem)
	r = &rel{s: s, key: key, gen: gen, pg: pg, readonly: readonly, refs: 1, ready: true}
	snap := bytes.Clone(mem)
	s.addRel(r)
	if !pg.explicit {
		s.setTwin(r, snap)
	}
	l.out = header{typ: framePage, ref: uint32(ref), gen: gen, n: pageSize}.append(l.out)
	l.out = append(l.out, snap...)
	s.mu.Unlock()
	go s.flush(l) // not on the reader goroutine: a write may wait
	return nil
}

// Unshare stops sharing a grant with mapper (it or its host died), for
// generations up to gen.
func (s *State) Unshare(mapper DomID, ref Ref, gen uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rels[relKey{mapper, ref, true}]; r != nil && r.gen <= gen {
		s.dropRel(r)
	}
}

// Forget drops every rel of the pages in mem, which are about to be
// unmapped: nothing may read them afterwards (queued writes that ship
// bytes of them go first).
func (s *State) Forget(mem []byte) {
	s.mu.Lock()
	var ls []*peerLink
	for _, l := range s.links {
		if len(l.spans) > 0 {
			ls = append(ls, l)
		}
	}
	s.mu.Unlock()
	for _, l := range ls {
		s.flush(l)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := 0; off+pageSize <= len(mem); off += pageSize {
		if pg := s.pages[addr(mem[off:])]; pg != nil {
			for _, r := range append([]*rel(nil), pg.rels...) {
				s.dropRel(r)
			}
		}
	}
}

// ---- The mapper's side.

// Replica is this domain's copy of a page granted by a domain of another
// host.
type Replica struct {
	r *rel
}

// Fd is the replica's memfd, to map where the user wants it.
func (rp *Replica) Fd() int { return rp.r.mfd.Fd() }

// Pending is a map being asked for, whose grant may turn out to be of a
// domain of another host.
type Pending struct {
	s *State
	r *rel
}

// Prepare readies this domain for a map of granter's ref, before the map
// is asked for: if the grant is another host's, the page's first content
// may arrive before the agent's reply. A grant mapped already shares its
// replica (and generation).
func (s *State) Prepare(granter DomID, ref Ref, writable bool) (*Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := relKey{granter, ref, false}
	if r := s.rels[key]; r != nil && !r.revoked {
		if r.readonly == writable {
			return nil, fmt.Errorf("link: ref %d of dom%d is mapped %s already: %w", ref, granter, mode(r.readonly), syscall.EBUSY)
		}
		r.refs++
		return &Pending{s, r}, nil
	} else if r != nil {
		s.dropRel(r)
	}
	s.nextGen++
	r := &rel{s: s, key: key, gen: s.nextGen, readonly: !writable, refs: 1}
	s.rels[key] = r
	return &Pending{s, r}, nil
}

// Gen is the generation the agent is told for this map.
func (p *Pending) Gen() uint32 { return p.r.gen }

// Cancel gives up: the map failed, or its grant is local.
func (p *Pending) Cancel() {
	s, r := p.s, p.r
	s.mu.Lock()
	if r.refs--; r.refs > 0 {
		s.mu.Unlock()
		return
	}
	s.dropRel(r)
	s.mu.Unlock()
	r.close()
}

// Replica waits until the page's first content has arrived from its
// granter (draining the link meanwhile) and returns the replica.
func (p *Pending) Replica(timeout time.Duration) (*Replica, error) {
	s, r := p.s, p.r
	deadline := time.Now().Add(timeout)
	for {
		s.view.Lock()
		s.mu.Lock()
		l := s.links[r.key.peer]
		var in inbox
		if !r.ready && l != nil {
			s.drainLocked(l, true, &in)
		}
		err := r.memLocked(s)
		ready, revoked := r.ready, r.revoked
		s.mu.Unlock()
		s.view.Unlock()
		in.deliver(s)
		switch {
		case err != nil:
			return nil, err
		case revoked:
			return nil, fmt.Errorf("link: dom%d went away: %w", r.key.peer, syscall.ESRCH)
		case ready:
			return &Replica{r}, nil
		case l == nil:
			return nil, fmt.Errorf("link: no link to dom%d: %w", r.key.peer, ErrNoLink)
		case time.Now().After(deadline):
			return nil, ErrTimeout
		}
		pfd := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
		unix.Poll(pfd, 10)
	}
}

// memLocked gives a replica its memory, once.
// Preconditions: s.mu held.
func (r *rel) memLocked(s *State) error {
	if r.mfd != nil {
		return nil
	}
	mfd, err := shm.NewMemfd("shi-replica", pageSize)
	if err != nil {
		return err
	}
	m, err := mfd.Map(true)
	if err != nil {
		mfd.Close()
		return err
	}
	r.mfd, r.m = mfd, m
	r.pg = s.pageAt(m.Bytes())
	r.pg.rels = append(r.pg.rels, r)
	return nil
}

func (r *rel) close() {
	if r.m != nil {
		r.m.Unmap()
		r.mfd.Close()
	}
}

func mode(readonly bool) string {
	if readonly {
		return "read-only"
	}
	return "writable"
}

// ErrTimeout means a replica's first content did not come.
var ErrTimeout = errors.New("link: the granter did not send the page")

// Attach records view, where the user mapped the replica, so that Wrote
// and Explicit know it.
func (s *State) Attach(rp *Replica, view []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg := rp.r.pg
	pg.views = append(pg.views, addr(view))
	s.pages[addr(view)] = pg
	if s.explicit[addr(view)] {
		s.explicitLocked(pg)
	}
}

// Unmap ends one map of a replica: its notification byte (off, or
// hypercall.NoNotify) is cleared, and on the last map everything written
// is released to the granter, followed by the fence.
func (s *State) Unmap(rp *Replica, off uint32) {
	s.mu.Lock()
	r := rp.r
	if off < pageSize && !r.readonly {
		r.pg.mem[off] = 0
		s.markPage(r.pg, int(off), 1)
	}
	if r.refs--; r.refs > 0 {
		s.mu.Unlock()
		return
	}
	l := s.links[r.key.peer]
	if l != nil && r.ready {
		if s.releaseRelLocked(l, r) {
			l.out = header{typ: frameCommit}.append(l.out)
		}
		l.out = header{typ: frameFence, ref: uint32(r.key.ref), gen: r.gen}.append(l.out)
	}
	s.dropRel(r)
	s.mu.Unlock()
	if l != nil {
		s.flush(l)
	}
	r.close()
}

// Revoke is the granter's death: its notification byte (off) is cleared
// in the replica, and ports bound to it are kicked.
func (s *State) Revoke(granter DomID, ref Ref, off uint32) {
	var in inbox
	s.mu.Lock()
	if r := s.rels[relKey{granter, ref, false}]; r != nil {
		if off < pageSize && r.pg != nil {
			r.pg.mem[off] = 0
		}
		r.revoked = true // nothing more comes, or goes
		s.raiseLocked(granter, &in)
	}
	s.mu.Unlock()
	in.deliver(s)
}

// ---- Reported writes.

// Explicit declares that every write to mem (pages of this domain, or
// views of replicas) will be reported with Wrote: releases then ship
// exactly those bytes instead of diffing whole pages against twins.
func (s *State) Explicit(mem []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := 0; off+pageSize <= len(mem); off += pageSize {
		a := addr(mem[off:])
		s.explicit[a] = true
		if pg := s.pages[a]; pg != nil {
			s.explicitLocked(pg)
		}
	}
}

// explicitLocked switches a page to reported writes; what differs from
// the twins is marked, so nothing written before is lost.
// Preconditions: s.mu held.
func (s *State) explicitLocked(pg *page) {
	pg.explicit = true
	for _, r := range pg.rels {
		if r.twin != nil {
			for i := range pageSize {
				if r.twin[i] != pg.mem[i] {
					s.markRel(r, i, 1)
				}
			}
			s.setTwin(r, nil)
		}
	}
}

// Wrote reports a write to b, inside pages made explicit.
func (s *State) Wrote(b []byte) {
	if !s.Active() || len(b) == 0 {
		return
	}
	a := addr(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	for end := a + uintptr(len(b)); a < end; {
		base := a &^ (pageSize - 1)
		n := min(end, base+pageSize) - a
		if pg := s.pages[base]; pg != nil {
			s.markPage(pg, int(a-base), int(n))
		}
		a += n
	}
}

// markPage records that bytes [off, off+n) of pg changed, for its rels
// that do not diff.
// Preconditions: s.mu held.
func (s *State) markPage(pg *page, off, n int) {
	for _, r := range pg.rels {
		if r.twin == nil && r.ships() {
			s.markRel(r, off, n)
		}
	}
}

// ships reports whether this domain sends its writes of the page to the
// peer: always for its own pages, for a replica only if mapped writable.
func (r *rel) ships() bool { return r.key.granter || !r.readonly }

// ---- Release.

// releaseLocked queues on l what changed in every page shared with its
// peer, as one release (committed).
// Preconditions: s.mu held.
func (s *State) releaseLocked(l *peerLink) {
	shipped := false
	for r := range s.diffing[l.peer] {
		shipped = s.releaseRelLocked(l, r) || shipped
	}
	for r := range s.marked[l.peer] {
		shipped = s.releaseRelLocked(l, r) || shipped
	}
	if shipped {
		l.out = header{typ: frameCommit}.append(l.out)
	}
}

// releaseRelLocked queues one rel's changes as an update frame, and
// reports whether there were any; the caller commits.
// Preconditions: s.mu held.
func (s *State) releaseRelLocked(l *peerLink, r *rel) bool {
	return s.releaseFromLocked(l, r, r.pg.mem)
}

// releaseFromLocked is releaseRelLocked with src, the page or a snapshot
// of it, as a diff-mode page's content.
func (s *State) releaseFromLocked(l *peerLink, r *rel, src []byte) bool {
	if !r.ready || r.revoked || !r.ships() {
		return false // nothing written, or not ours to write
	}
	start, startBuf, startSpans := l.outLen(), len(l.out), len(l.spans)
	dir := uint8(toGranter)
	if r.key.granter {
		dir = toMapper
	}
	l.out = header{typ: frameUpdate, dir: dir, ref: uint32(r.key.ref), gen: r.gen}.append(l.out)
	switch {
	case r.twin != nil:
		l.out = diff(l.out, r.twin, src)
	case !r.dirty.empty():
		// Reported writes ship from the page itself (a vectored write);
		// the page stays mapped until the link is flushed (Unmap and
		// Forget flush first).
		r.dirty.runs(func(off, n int) {
			if n < minSpan {
				l.out = appendRun(l.out, off, r.pg.mem[off:off+n])
				return
			}
			l.out = appendRun(l.out, off, nil)
			putRunLen(l.out[len(l.out)-runHeader:], n)
			l.spans = append(l.spans, span{at: len(l.out), b: r.pg.mem[off : off+n]})
			l.extern += n
		})
		r.dirty = bitmap{}
		s.marked.del(r)
		r.inMarked = false
	}
	n := l.outLen() - start - headerSize
	if n == 0 {
		l.out, l.spans = l.out[:startBuf], l.spans[:startSpans]
		return false
	}
	// A page diffed densely fits: the payload bound is the worst case.
	putLen(l.out[startBuf:], uint32(n))
	return true
}

func putLen(h []byte, n uint32) {
	h[12], h[13], h[14], h[15] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
}

// ---- Apply.

// apply writes a peer's runs into the page, and into this rel's twin so
// they are not sent back; other rels of the page that do not diff get
// them marked, so their peers get them too.
// Preconditions: s.mu held; payload checked.
func (r *rel) apply(payload []byte) {
	parseRuns(payload, func(rn run) {
		copy(r.pg.mem[rn.off:], rn.data)
		if r.twin != nil {
			copy(r.twin[rn.off:], rn.data)
		}
		for _, o := range r.pg.rels {
			if o != r && o.twin == nil && o.ships() {
				r.s.markRel(o, rn.off, len(rn.data))
			}
		}
	})
}

// applyPending applies the committed releases the background drained.
// Preconditions: s.mu held.
func (r *rel) applyPending() {
	if r.s.pending.del(r) {
		r.s.npending.Add(-1)
	}
	if b := r.pend.payload(); b != nil {
		r.apply(b)
	}
}
