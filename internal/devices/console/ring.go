package console

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"shi/guest/evtchn"
	"shi/internal/ring"
)

// Limits and defaults.
const (
	// DefaultLimit is the scrollback a back end keeps per console when the
	// front end's "limit" key says nothing (libxl writes 1048576 there).
	DefaultLimit = 1 << 20
	// MaxLimit caps what a "limit" key may ask for.
	MaxLimit = 16 << 20
	// chunk is how much one pass of a loop moves at most.
	chunk = 4096
	// pollEvery bounds a loop's sleep: it re-checks for a vanished peer.
	pollEvery = time.Second
)

// ErrPeerGone means the other end of the console went away.
var ErrPeerGone = errors.New("console: the other end is gone")

// errClosed means this end was closed.
var errClosed = errors.New("console: closed")

// rings are one end's view of a struct xencons_interface page: in (back
// end writes keystrokes, front end reads) and out (front end writes
// output, back end reads), with the event channel that kicks the peer and
// an IPI port that wakes this end's loop.
type rings struct {
	evt        *evtchn.Handle
	port, kick evtchn.Port
	in, out    *ring.Stream
}

// newRings attaches to page. Every write to the page is reported to the
// memory model (Explicit + Wrote), so a release across hosts ships only
// the bytes written.
func newRings(page []byte, evt *evtchn.Handle, port, kick evtchn.Port) (*rings, error) {
	in, out, err := ring.Console(page)
	if err != nil {
		return nil, err
	}
	evt.Explicit(page)
	in.Wrote, out.Wrote = evt.Wrote, evt.Wrote
	return &rings{evt: evt, port: port, kick: kick, in: in, out: out}, nil
}

// read copies what src holds into p, seen whole (the peer's released
// writes are applied first, and none is applied half-way through).
func (r *rings) read(src *ring.Stream, p []byte) (int, error) {
	r.evt.Acquire()
	var n int
	var err error
	r.evt.View(func() { n, err = src.Read(p) })
	return n, err
}

// write copies as much of p as fits into dst.
func (r *rings) write(dst *ring.Stream, p []byte) (int, error) {
	r.evt.Acquire()
	return dst.Write(p)
}

// consumed counts n bytes read from src since the producer was last
// notified, and reports whether it must be notified now: once half the
// ring has been freed. A producer waits for room only when it saw the
// ring full, and the reads that follow free all of it, so it is never
// left waiting; a keystroke's echo, read alone, then costs its producer
// no wake-up. Across hosts a producer's view of the index may lag by what
// was freed without an event, less than half the ring, and the caller
// releases the index anyway (its arrival raises an event at a producer
// that waits).
func consumed(src *ring.Stream, freed *int, n int) bool {
	*freed += n
	if *freed >= src.Size()/2 {
		*freed = 0
		return true
	}
	return false
}

// publish makes this end's progress visible: an event if notify (which
// also releases), else a release without one.
func (r *rings) publish(notify bool) error {
	if !notify {
		r.evt.Release(r.port)
		return nil
	}
	if err := r.evt.Notify(r.port); err != nil && !r.evt.PeerGone(r.port) {
		return err
	}
	return nil
}

// sleep waits for an event on any port of the handle (the peer's or the
// kick) or until d passes; it reports nothing but errors: every wake-up
// re-checks the rings.
func (r *rings) sleep(d time.Duration) error {
	p, err := r.evt.Wait(d)
	if errors.Is(err, evtchn.ErrNoEvent) {
		return nil
	}
	if err != nil {
		return err
	}
	return r.evt.Unmask(p)
}

// parseUint reads a decimal XenStore value.
func parseUint(what string, v []byte, bits int) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("console: %s is %q, not a number", what, v)
	}
	return n, nil
}
