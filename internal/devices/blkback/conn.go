package blkback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
	gring "shi/guest/ring"
	"shi/internal/abi"
	"shi/internal/nbd"
	"shi/internal/ring"
)

// MaxPersistentGrants bounds the data and indirect pages a back end keeps
// mapped for one front end (Linux's max_persistent_grants is 1056); past
// it, pages are mapped for one request.
const MaxPersistentGrants = 4096

// ErrPeerGone means the front end's domain (or its host) went away.
var ErrPeerGone = errors.New("blkback: the front end is gone")

// conn serves one connected front end's ring. Lock order: ringMu, then
// rspMu is never held with it; grantMu is a leaf.
type conn struct {
	log        *slog.Logger
	fe         evtchn.DomID
	store      nbd.Backend
	geo        Geometry
	persistent bool

	evt        *evtchn.Handle
	port, kick evtchn.Port
	g          *gnttab.Handle
	ringMap    *gnttab.Mapping
	sh         []byte // the shared ring pages

	// ringMu guards back: requests are consumed by the loop and responses
	// produced by whichever request finishes.
	ringMu sync.Mutex
	back   *ring.Back

	// rspMu guards done and pushing: finished requests wait in done for
	// the one goroutine that is pushing responses (pushing), which takes
	// them in batches, so a burst of completions costs one push and at
	// most one event.
	rspMu   sync.Mutex
	done    []abi.BlkifResponse
	pushing bool

	// grantMu guards grants: the front end's persistent pages, mapped on
	// first use and kept until the connection ends.
	grantMu sync.Mutex
	grants  map[gnttab.Ref]*gnttab.Mapping

	inflight sync.WaitGroup // flushes and discards running on their own
	batch    []pass         // run's requests of one pass
	rsps     []abi.BlkifResponse
}

// ringSetup is what the front end published for its ring.
type ringSetup struct {
	refs       []gnttab.Ref
	port       evtchn.Port
	persistent bool
}

// connect maps the front end's ring and binds its event channel.
func connect(hvc *hv.Conn, fe uint32, rs ringSetup, store nbd.Backend, geo Geometry, log *slog.Logger) (c *conn, err error) {
	evt, err := evtchn.Open(hvc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			evt.Close()
		}
	}()
	port, err := evt.BindInterdomain(evtchn.DomID(fe), rs.port)
	if err != nil {
		return nil, fmt.Errorf("bind the front end's event channel %d: %w", rs.port, err)
	}
	kick, err := evt.BindIPI()
	if err != nil {
		return nil, err
	}
	g := gnttab.Open(hvc)
	m, err := g.Map(evtchn.DomID(fe), rs.refs, true)
	if err != nil {
		return nil, fmt.Errorf("map the front end's ring (grants %v): %w", rs.refs, err)
	}
	back, err := ring.NewBack(m.Bytes(), abi.BlkifRequestSize)
	if err != nil {
		g.Unmap(m)
		return nil, fmt.Errorf("ring of %d pages: %w", len(rs.refs), err)
	}
	// Every write this end makes to the ring is reported: a release to a
	// front end on another host ships only those bytes.
	evt.Explicit(m.Bytes())
	return &conn{log: log, fe: evtchn.DomID(fe), store: store, geo: geo, persistent: rs.persistent,
		evt: evt, port: port, kick: kick, g: g, ringMap: m, sh: m.Bytes(), back: back,
		grants: map[gnttab.Ref]*gnttab.Mapping{}}, nil
}

// run consumes requests until ctx ends, the front end goes or breaks the
// ring. Requests are handled concurrently; run returns at once, and
// close waits for them.
func (c *conn) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.evt.Notify(c.kick) })
	defer stop()
	entry := make([]byte, abi.BlkifRequestSize)
	pending := func() bool {
		c.evt.Acquire()
		c.ringMu.Lock()
		n, err := c.back.PendingRequests()
		c.ringMu.Unlock()
		return n > 0 || err != nil || ctx.Err() != nil
	}
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.evt.Acquire()
		got := false
		batch := c.batch[:0]
		for {
			var slot []byte
			var err error
			c.ringMu.Lock()
			c.evt.View(func() {
				if slot, err = c.back.NextRequest(); slot != nil {
					copy(entry, slot) // the front end may still change the slot
				}
			})
			c.ringMu.Unlock()
			if err != nil {
				return fmt.Errorf("the front end broke its ring: %w", err)
			}
			if slot == nil {
				break
			}
			got = true
			if req, ok := c.dispatch(entry); ok {
				batch = append(batch, req)
			}
		}
		c.batch = batch
		c.execute(batch)
		if got {
			if len(batch) > 0 {
				rsps := c.rsps[:0]
				for _, r := range batch {
					rsps = append(rsps, r.rsp)
				}
				c.rsps = rsps
				c.respond(rsps...)
			}
			continue
		}
		if ring.Spin(gring.SpinFor, pending) {
			continue
		}
		c.ringMu.Lock()
		more, err := c.back.FinalCheckForRequests()
		c.evt.Wrote(c.sh[abi.RING_REQ_EVENT : abi.RING_REQ_EVENT+4])
		c.ringMu.Unlock()
		if err != nil {
			return fmt.Errorf("the front end broke its ring: %w", err)
		}
		if more {
			continue
		}
		if c.evt.PeerGone(c.port) || c.ringMap.Revoked() {
			return ErrPeerGone
		}
		// Let the flushes this pass started run first: a wait blocks
		// this thread with its P.
		runtime.Gosched()
		p, err := c.evt.Wait(time.Second) // a timeout re-checks PeerGone
		if errors.Is(err, evtchn.ErrNoEvent) {
			continue
		}
		if err != nil {
			return err
		}
		c.evt.Unmask(p)
	}
}

// dispatch validates one request (copied out of the ring) and carries
// it out. Reads and writes are done here, in the ring's goroutine, and
// their response returned (ok) to go out with the others of this pass:
// a goroutine per request would cost a hand-off each, and a thread that
// waits on the event channel keeps its P for a while (evtchn.HotWait),
// so a goroutine it started may not run until it sleeps. A flush (an
// fsync) or a discard must not hold reads up: it runs on its own and
// responds when done.
func (c *conn) dispatch(entry []byte) (p pass, ok bool) {
	req, err := Parse(entry, c.geo)
	if err != nil {
		c.log.Debug("blkback: refused a request", "err", err)
		return pass{rsp: abi.BlkifResponse{ID: req.ID, Operation: req.Operation, Status: Status(err)}, done: true}, true
	}
	if req.Kind == KindRead || req.Kind == KindWrite {
		return pass{req: req, rsp: abi.BlkifResponse{ID: req.ID, Operation: req.Operation}}, true
	}
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		c.respond(abi.BlkifResponse{ID: req.ID, Operation: req.Operation, Status: Status(c.do(&req))})
	}()
	return pass{}, false
}

// pass is one request of a pass over the ring, and its response.
type pass struct {
	req  Request
	rsp  abi.BlkifResponse
	done bool // refused: rsp is final
}

// Workers is how many goroutines carry out the reads and writes of one
// pass over the ring; 1 does them in the ring's goroutine. More helps a
// store that waits for a disk (requests in flight together); on an
// image in the page cache 4 was slower than 1 (BenchmarkRandRead4kQD32
// 5.8 against 5.3 µs a read, BenchmarkSeqRead1M 1.0 against 0.8 ms).
var Workers = 1

// execute carries out a pass's reads and writes, in up to Workers
// goroutines: a store that waits for a disk then has requests in flight
// together. The ring's goroutine works too, and waits for the others
// (giving up its P), then pushes all their responses at once.
func (c *conn) execute(batch []pass) {
	todo := 0
	for i := range batch {
		if !batch[i].done {
			todo++
		}
	}
	var next atomic.Int32
	work := func() {
		for i := int(next.Add(1) - 1); i < len(batch); i = int(next.Add(1) - 1) {
			if p := &batch[i]; !p.done {
				p.rsp.Status = Status(c.do(&p.req))
			}
		}
	}
	var wg sync.WaitGroup
	for range min(Workers, todo) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

// do carries out a validated request.
func (c *conn) do(req *Request) error {
	switch req.Kind {
	case KindFlush:
		if len(req.Segs) > 0 {
			if err := c.rw(req, true); err != nil {
				return err
			}
		}
		return c.store.Flush()
	case KindDiscard:
		if req.NrSectors == 0 {
			return nil
		}
		return c.store.Trim(int64(req.Sector)*abi.BlkifSectorSize, int64(req.NrSectors)*abi.BlkifSectorSize)
	}
	if len(req.IndirectGrefs) > 0 {
		if err := c.readIndirect(req); err != nil {
			return err
		}
	}
	err := c.rw(req, req.Kind == KindWrite)
	if err != nil {
		c.log.Debug("blkback: request failed", "op", req.Operation, "sector", req.Sector, "err", err)
	}
	return err
}

// readIndirect maps an indirect request's descriptor pages and decodes
// its segments.
func (c *conn) readIndirect(req *Request) error {
	buf := make([]byte, 0, len(req.IndirectGrefs)*abi.PAGE_SIZE)
	for _, ref := range req.IndirectGrefs {
		pg, done, err := c.page(ref, false)
		if err != nil {
			return err
		}
		buf = append(buf, pg...)
		done()
	}
	return req.ReadIndirect(buf, c.geo)
}

// rw moves a read or write request's data between the store and the
// front end's pages: in one call for a store that takes vectors, else
// segment by segment.
func (c *conn) rw(req *Request, write bool) error {
	off := int64(req.Sector) * abi.BlkifSectorSize
	if vs, ok := c.store.(vectorStore); ok && len(req.Segs) > 1 {
		return c.rwv(vs, req.Segs, off, write)
	}
	for _, s := range req.Segs {
		pg, done, err := c.page(s.Gref, write)
		if err != nil {
			return err
		}
		b := pg[int(s.FirstSect)*abi.BlkifSectorSize : (int(s.LastSect)+1)*abi.BlkifSectorSize]
		if write {
			_, err = c.store.WriteAt(b, off)
		} else {
			_, err = c.store.ReadAt(b, off)
			c.evt.Wrote(b)
		}
		done()
		if err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// rwv is rw for a vectorStore.
func (c *conn) rwv(vs vectorStore, segs []abi.BlkifSegment, off int64, write bool) error {
	bufs := make([][]byte, 0, len(segs))
	var dones []func()
	defer func() {
		for _, done := range dones {
			done()
		}
	}()
	for _, s := range segs {
		pg, done, err := c.page(s.Gref, write)
		if err != nil {
			return err
		}
		dones = append(dones, done)
		bufs = append(bufs, pg[int(s.FirstSect)*abi.BlkifSectorSize:(int(s.LastSect)+1)*abi.BlkifSectorSize])
	}
	if write {
		return vs.WritevAt(bufs, off)
	}
	err := vs.ReadvAt(slices.Clone(bufs), off) // it consumes its slice
	for _, b := range bufs {
		c.evt.Wrote(b)
	}
	return err
}

// page returns the front end's granted page ref, and a function to call
// when done with it. With persistent grants the page is mapped writable
// once and kept (the front end grants them so); otherwise it is mapped
// for this use only, read-only when the back end only reads it.
func (c *conn) page(ref gnttab.Ref, readOnly bool) ([]byte, func(), error) {
	if c.persistent {
		c.grantMu.Lock()
		m := c.grants[ref]
		c.grantMu.Unlock()
		if m != nil {
			return m.Bytes(), func() {}, nil
		}
	}
	writable := c.persistent || !readOnly
	m, err := c.g.Map(c.fe, []gnttab.Ref{ref}, writable)
	if err != nil {
		return nil, nil, fmt.Errorf("map the front end's grant %d: %w", ref, err)
	}
	if c.persistent {
		c.grantMu.Lock()
		if old := c.grants[ref]; old != nil {
			// Another request mapped it meanwhile: use theirs.
			c.grantMu.Unlock()
			c.g.Unmap(m)
			return old.Bytes(), func() {}, nil
		}
		if len(c.grants) < MaxPersistentGrants {
			// Kept mapped: its writes are reported (rw reports every
			// write to a data page), so a release ships only those. A
			// page mapped for one request stays in diff mode, since
			// guest/link remembers Explicit addresses for good.
			c.evt.Explicit(m.Bytes())
			c.grants[ref] = m
			c.grantMu.Unlock()
			return m.Bytes(), func() {}, nil
		}
		c.grantMu.Unlock()
	}
	return m.Bytes(), func() { c.g.Unmap(m) }, nil
}

// respond queues responses and pushes the queue unless another
// goroutine is pushing it already.
func (c *conn) respond(rsps ...abi.BlkifResponse) {
	c.rspMu.Lock()
	c.done = append(c.done, rsps...)
	if c.pushing {
		c.rspMu.Unlock()
		return
	}
	c.pushing = true
	var batch []abi.BlkifResponse
	for len(c.done) > 0 {
		batch, c.done = c.done, batch[:0]
		c.rspMu.Unlock()
		c.push(batch)
		c.rspMu.Lock()
	}
	c.pushing = false
	c.rspMu.Unlock()
}

// push writes responses into the ring, publishes them and notifies the
// front end if it asked to be (else releases them to a front end on
// another host, which may be polling).
func (c *conn) push(batch []abi.BlkifResponse) {
	c.evt.Acquire() // the front end's rsp_event
	c.ringMu.Lock()
	for i := range batch {
		slot := c.back.NextResponse()
		if slot == nil {
			break // more responses than requests: cannot happen
		}
		batch[i].Encode(slot)
		c.evt.Wrote(slot[:abi.BlkifResponseSize])
	}
	notify := c.back.PushResponses()
	c.evt.Wrote(c.sh[abi.RING_RSP_PROD : abi.RING_RSP_PROD+4])
	c.ringMu.Unlock()
	if notify {
		c.evt.Notify(c.port)
	} else {
		c.evt.Release(c.port)
	}
}

// close waits for the requests in flight, flushes the store and unmaps
// every page. The store stays open: its owner closes it.
func (c *conn) close() error {
	c.inflight.Wait()
	err := c.store.Flush()
	c.grantMu.Lock()
	for ref, m := range c.grants {
		err = errors.Join(err, c.g.Unmap(m))
		delete(c.grants, ref)
	}
	c.grantMu.Unlock()
	return errors.Join(err, c.g.Unmap(c.ringMap), c.evt.Close())
}
