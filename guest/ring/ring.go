// Package ring puts shared rings to work between domains: the io/ring.h
// request/response rings of internal/ring with the event channel that
// kicks the other end, and Pipe, a one-way byte stream through granted
// pages.
//
// Waiting follows Xen's rule (and gVisor's waiter): register interest,
// then check again, then sleep. A ring's event index or a pipe's waiting
// flag is published before the final check, so a peer that fills the
// ring after the check sees it and sends the event. Events are only
// hints: every wake-up re-checks the indices.
//
// Across hosts (DESIGN.md §3) each side has its own copy of the pages:
// every check of the shared indices acquires first (the peer's released
// writes are applied), and every publication releases (Push, a pipe's
// Write and Read), so a peer that polls sees progress without an event.
// Pipes report each write they make, so a release ships exactly those
// bytes instead of comparing whole pages.
//
// Each ring wants an evtchn.Handle of its own (its Wait takes whatever
// port of the handle fires).
package ring

import (
	"errors"
	"fmt"
	"io"
	"time"

	"shi/guest/evtchn"
	"shi/internal/ring"
)

// ErrTimeout means a wait ran out of time.
var ErrTimeout = errors.New("ring: timed out")

// ErrPeerGone means the other end's domain (or its host) went away
// without closing the stream.
var ErrPeerGone = errors.New("ring: the peer is gone")

// waitPort sleeps until the handle's port fires (re-arming it) or the
// deadline passes; a zero deadline waits forever.
func waitPort(h *evtchn.Handle, deadline time.Time) error {
	timeout := time.Duration(-1)
	if !deadline.IsZero() {
		if timeout = time.Until(deadline); timeout <= 0 {
			return ErrTimeout
		}
	}
	p, err := h.Wait(timeout)
	if errors.Is(err, evtchn.ErrNoEvent) {
		return ErrTimeout
	}
	if err != nil {
		return err
	}
	return h.Unmask(p)
}

// SpinFor is how long a pipe end polls the shared indices before it
// sleeps on the event channel. A wake-up through the peer's eventfd costs
// tens of microseconds on a busy host, more than moving a chunk of data,
// so a streaming pair that slept whenever the ring ran empty or full would
// spend its time sleeping. Zero disables polling.
var SpinFor = 20 * time.Microsecond

// Front is the front end of an io/ring.h ring: it produces requests and
// consumes responses, and kicks its back end through port.
type Front struct {
	*ring.Front
	evt  *evtchn.Handle
	port evtchn.Port
}

// NewFront initialises the shared ring (SHARED_RING_INIT) and attaches a
// front end to it. Do this before granting the pages.
func NewFront(shared []byte, entrySize int, evt *evtchn.Handle, port evtchn.Port) (*Front, error) {
	if !ring.Aligned(shared) || len(shared) < 64 {
		return nil, ring.ErrGeometry
	}
	ring.Init(shared)
	f, err := ring.NewFront(shared, entrySize)
	if err != nil {
		return nil, err
	}
	return &Front{Front: f, evt: evt, port: port}, nil
}

// Push publishes the requests produced and notifies the back end if it
// asked to be; otherwise it still releases them to a back end on another
// host, which may be polling.
func (f *Front) Push() error {
	f.evt.Acquire() // the back end's req_event
	if f.PushRequests() {
		return f.evt.Notify(f.port)
	}
	f.evt.Release(f.port)
	return nil
}

// WaitResponses blocks until a response is there (or the deadline; zero
// for none), with the final check that sets rsp_event before sleeping.
func (f *Front) WaitResponses(deadline time.Time) error {
	for {
		f.evt.Acquire()
		more, err := f.FinalCheckForResponses()
		if err != nil || more {
			return err
		}
		if err := waitPort(f.evt, deadline); err != nil {
			return err
		}
	}
}

// NextResponse is ring.Front's, seen whole (see evtchn.Handle.View).
func (f *Front) NextResponse() (rsp []byte, err error) {
	f.evt.View(func() { rsp, err = f.Front.NextResponse() })
	return rsp, err
}

// Back is the back end of an io/ring.h ring.
type Back struct {
	*ring.Back
	evt  *evtchn.Handle
	port evtchn.Port
}

// NewBack attaches a back end to a ring its front end initialised.
func NewBack(shared []byte, entrySize int, evt *evtchn.Handle, port evtchn.Port) (*Back, error) {
	b, err := ring.NewBack(shared, entrySize)
	if err != nil {
		return nil, err
	}
	return &Back{Back: b, evt: evt, port: port}, nil
}

// Push publishes the responses produced and notifies the front end if it
// asked to be; otherwise it still releases them.
func (b *Back) Push() error {
	b.evt.Acquire() // the front end's rsp_event
	if b.PushResponses() {
		return b.evt.Notify(b.port)
	}
	b.evt.Release(b.port)
	return nil
}

// WaitRequests blocks until a request is there (or the deadline).
func (b *Back) WaitRequests(deadline time.Time) error {
	for {
		b.evt.Acquire()
		more, err := b.FinalCheckForRequests()
		if err != nil || more {
			return err
		}
		if err := waitPort(b.evt, deadline); err != nil {
			return err
		}
	}
}

// NextRequest is ring.Back's, seen whole (see evtchn.Handle.View).
func (b *Back) NextRequest() (req []byte, err error) {
	b.evt.View(func() { req, err = b.Back.NextRequest() })
	return req, err
}

// Pipe layout: page 0 holds the control words, the data area follows.
const (
	pipeCons     = 0  // consumer index (reader writes)
	pipeProd     = 4  // producer index (writer writes)
	pipeReadWait = 8  // reader sleeps until data: writer clears and notifies
	pipeWritWait = 12 // writer sleeps until space: reader clears and notifies
	pipeClosed   = 16 // writer closed
	// PipeHeader is the bytes before the data area.
	PipeHeader = 4096
)

// pipe is what both ends share.
type pipe struct {
	s    *ring.Stream
	ctl  []byte
	evt  *evtchn.Handle
	port evtchn.Port
}

func newPipe(shared []byte, evt *evtchn.Handle, port evtchn.Port) (pipe, error) {
	if len(shared) <= PipeHeader || !ring.Aligned(shared) {
		return pipe{}, ring.ErrGeometry
	}
	s, err := ring.NewStream(shared[PipeHeader:], shared, pipeCons, pipeProd)
	if err != nil {
		return pipe{}, fmt.Errorf("ring: pipe data area of %d bytes: %w", len(shared)-PipeHeader, err)
	}
	// Every write to the pages is reported: a release across hosts then
	// ships those bytes, however large the ring.
	evt.Explicit(shared)
	s.Wrote = evt.Wrote
	return pipe{s: s, ctl: shared, evt: evt, port: port}, nil
}

// store sets a control word and reports it.
func (p *pipe) store(off int, v uint32) {
	ring.Store32(p.ctl, off, v)
	p.evt.Wrote(p.ctl[off : off+4])
}

// publish makes what this end wrote visible to the peer: it notifies the
// peer if it set flag (and clears it), else releases without an event (a
// peer polling the indices on another host sees it) if release is set.
// It reports whether the writes went out.
func (p *pipe) publish(flag int, release bool) (bool, error) {
	p.evt.Acquire()
	if ring.Load32(p.ctl, flag) != 0 && ring.And32(p.ctl, flag, 0) != 0 {
		p.evt.Wrote(p.ctl[flag : flag+4])
		return true, p.evt.Notify(p.port)
	}
	if release {
		p.evt.Release(p.port)
	}
	return release, nil
}

// freedSpace publishes the consumer index after a read of n bytes. A
// writer on another host that is not waiting learns of the space once an
// eighth of the pipe is free, not after every read: the index moves
// without an event, so releasing it each time would cost a frame on the
// link and a drain at the writer per read, where the writer only needs
// room before it fills the pipe. A writer that waits has set its flag,
// which the reader answers with an event (that releases everything); a
// reader that goes to sleep releases before it blocks, and the library's
// background flush ships the index within about a millisecond anyway.
func (r *PipeReader) freedSpace(n int) error {
	r.freed += n
	published, err := r.publish(pipeWritWait, r.freed >= r.s.Size()/8)
	if published {
		r.freed = 0
	}
	return err
}

// ready acquires and then reports cond, for spin.
func (p *pipe) ready(cond func() bool) func() bool {
	return func() bool {
		p.evt.Acquire()
		return cond()
	}
}

// PipeWriter writes a byte stream into shared pages: one header page and
// a power-of-two data area.
type PipeWriter struct{ pipe }

// NewPipeWriter zeroes the control page and attaches the writer; do it
// before granting the pages.
func NewPipeWriter(shared []byte, evt *evtchn.Handle, port evtchn.Port) (*PipeWriter, error) {
	if len(shared) > PipeHeader {
		clear(shared[:PipeHeader]) // before it is granted: no report needed
	}
	p, err := newPipe(shared, evt, port)
	if err != nil {
		return nil, err
	}
	return &PipeWriter{p}, nil
}

// Write copies all of b into the pipe, sleeping while it is full.
func (w *PipeWriter) Write(b []byte) (int, error) {
	done := 0
	for len(b) > 0 {
		n, err := w.s.Write(b)
		if err != nil {
			return done, err
		}
		if n > 0 {
			done += n
			b = b[n:]
			if _, err := w.publish(pipeReadWait, true); err != nil {
				return done, err
			}
			continue
		}
		if ring.Spin(SpinFor, w.ready(func() bool { room, err := w.s.Writable(); return room > 0 || err != nil })) {
			continue
		}
		w.store(pipeWritWait, 1)
		w.evt.Acquire()
		if room, err := w.s.Writable(); err != nil || room > 0 {
			if err != nil {
				return done, err
			}
			continue
		}
		if w.evt.PeerGone(w.port) {
			return done, ErrPeerGone
		}
		if err := waitPort(w.evt, time.Time{}); err != nil {
			return done, err
		}
	}
	return done, nil
}

// Close tells the reader that no more data comes.
func (w *PipeWriter) Close() error {
	w.store(pipeClosed, 1)
	return w.evt.Notify(w.port)
}

// PipeReader reads the byte stream of a PipeWriter.
type PipeReader struct {
	pipe
	freed int // bytes read since the consumer index was last released
}

// NewPipeReader attaches the reader to pages its writer set up.
func NewPipeReader(shared []byte, evt *evtchn.Handle, port evtchn.Port) (*PipeReader, error) {
	p, err := newPipe(shared, evt, port)
	if err != nil {
		return nil, err
	}
	return &PipeReader{pipe: p}, nil
}

// Read reads what is there (at most len(b)), sleeping while the pipe is
// empty; io.EOF once the writer closed and everything was read.
func (r *PipeReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		r.evt.Acquire()
		var n int
		var err error
		r.evt.View(func() { n, err = r.s.Read(b) })
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, r.freedSpace(n)
		}
		if ring.Spin(SpinFor, r.ready(func() bool {
			avail, err := r.s.Readable()
			return avail > 0 || err != nil || ring.Load32(r.ctl, pipeClosed) != 0
		})) && ring.Load32(r.ctl, pipeClosed) == 0 {
			continue
		}
		r.store(pipeReadWait, 1)
		r.evt.Acquire()
		if avail, err := r.s.Readable(); err != nil || avail > 0 {
			if err != nil {
				return 0, err
			}
			continue
		}
		if ring.Load32(r.ctl, pipeClosed) != 0 {
			// Data written before Close is visible once closed is.
			if avail, err := r.s.Readable(); err != nil || avail > 0 {
				if err != nil {
					return 0, err
				}
				continue
			}
			return 0, io.EOF
		}
		if r.evt.PeerGone(r.port) {
			return 0, ErrPeerGone
		}
		if err := waitPort(r.evt, time.Time{}); err != nil {
			return 0, err
		}
	}
}
