package blkfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/ring"
)

// ErrBackendGone means the back end's domain or host went away, or the
// back end closed the disk: every request in flight and every later one
// fails with it. It wraps syscall.EIO.
var ErrBackendGone = fmt.Errorf("blkfront: the back end is gone: %w", syscall.EIO)

// ErrClosed means the disk was closed. It wraps os.ErrClosed.
var ErrClosed = fmt.Errorf("blkfront: disk closed: %w", os.ErrClosed)

// ErrReadOnly is a write, discard or zeroing of a read-only disk. It
// wraps syscall.EROFS.
var ErrReadOnly = fmt.Errorf("blkfront: the disk is read-only: %w", syscall.EROFS)

// SpinFor is how long the completer polls the ring for responses before
// it sleeps on the event channel while requests are in flight: a
// wake-up through the event channel costs tens of microseconds, more
// than a back end takes to answer from its page cache.
var SpinFor = 30 * time.Microsecond

// Disk is a virtual block device served by a blkif back end. It is safe
// for concurrent use: each ReadAt, WriteAt, Flush or Discard takes ring
// slots and pool pages, waits while there are none, and its requests are
// in flight alongside everyone else's.
type Disk struct {
	dev        string
	xs         *xs.Client
	fdir, bdir string
	be         evtchn.DomID
	opts       Options

	evt        *evtchn.Handle
	port, kick evtchn.Port
	g          *gnttab.Handle
	ringShare  *gnttab.Share
	poolShare  *gnttab.Share

	// Set at Open.
	size        int64
	sectorSize  int
	readOnly    bool
	flush       bool // feature-flush-cache
	discard     bool // feature-discard
	maxIndirect int  // feature-max-indirect-segments

	// mu guards q, err, closed and the push state; cond waits on it for
	// free ids and pages. Lock order: mu, then the library's (evtchn,
	// link) locks; nothing holding a library lock takes mu.
	mu      sync.Mutex
	cond    *sync.Cond
	q       *queue
	err     error // set once: the disk failed or is closed
	closed  bool
	pushing bool // a submitter is pushing: others leave their requests to it
	pending bool // produced since the pusher last pushed

	completerDone chan struct{}
	stopWatch     func()
	watchDone     chan struct{}
	closeOnce     sync.Once
	closeErr      error
}

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the back end's sector-size: offsets and lengths are
// multiples of it.
func (d *Disk) SectorSize() int { return d.sectorSize }

// ReadOnly reports whether the back end serves the disk read-only.
func (d *Disk) ReadOnly() bool { return d.readOnly }

// Features reports what the back end offered: flush, discard, and the
// most pages one request moves (11 without indirect descriptors).
func (d *Disk) Features() (flush, discard bool, maxSegments int) {
	return d.flush, d.discard, d.q.maxSegs
}

// check validates a range of n bytes at off.
func (d *Disk) check(off, n int64) error {
	ss := int64(d.sectorSize)
	if off < 0 || n < 0 || off%ss != 0 || n%ss != 0 {
		return fmt.Errorf("blkfront: %s: %d bytes at %d: not multiples of the %d-byte sector: %w", d.dev, n, off, ss, syscall.EINVAL)
	}
	return nil
}

// ReadAt implements io.ReaderAt. off and len(p) are multiples of the
// sector size; a read past the end returns what is before it and io.EOF.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	var eof error
	if off >= d.size {
		return 0, io.EOF
	}
	if int64(len(p)) > d.size-off {
		p, eof = p[:d.size-off], io.EOF
	}
	n, err := d.rw(abi.BLKIF_OP_READ, p, off)
	if err == nil {
		err = eof
	}
	return n, err
}

// WriteAt implements io.WriterAt. off and len(p) are multiples of the
// sector size and the range lies within the disk.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.rw(abi.BLKIF_OP_WRITE, p, off)
}

// WriteAtFUA is WriteAt that returns only once the data is durable: blkif
// has no FUA operation, so it writes, then flushes.
func (d *Disk) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, d.Flush()
}

func (d *Disk) checkWrite(off, n int64) error {
	if err := d.check(off, n); err != nil {
		return err
	}
	if d.readOnly {
		return fmt.Errorf("%w (%s)", ErrReadOnly, d.dev)
	}
	if off > d.size || n > d.size-off {
		return fmt.Errorf("blkfront: %s: %d bytes at %d: past the end (%d bytes): %w", d.dev, n, off, d.size, syscall.ENOSPC)
	}
	return nil
}

// Flush makes every completed write durable (BLKIF_OP_FLUSH_DISKCACHE).
// A back end without feature-flush-cache has no cache to flush: its
// writes are durable when answered, as Linux assumes.
func (d *Disk) Flush() error {
	if !d.flush {
		return d.Err()
	}
	r := &request{op: abi.BLKIF_OP_FLUSH_DISKCACHE, done: make(chan error, 1)}
	if err := d.submit(r); err != nil {
		return err
	}
	return <-r.done
}

// Discard tells the back end that a range's data is no longer needed
// (BLKIF_OP_DISCARD); it fails with ErrNotSupported if the back end does
// not offer feature-discard.
func (d *Disk) Discard(off, n int64) error {
	if err := d.checkWrite(off, n); err != nil {
		return err
	}
	if !d.discard {
		return fmt.Errorf("%w (%s has no feature-discard)", ErrNotSupported, d.dev)
	}
	if n == 0 {
		return nil
	}
	r := &request{op: abi.BLKIF_OP_DISCARD, sector: uint64(off / abi.BlkifSectorSize), nsect: uint64(n / abi.BlkifSectorSize),
		done: make(chan error, 1)}
	if err := d.submit(r); err != nil {
		return err
	}
	return <-r.done
}

// Trim implements nbd.Backend.Trim: Discard.
func (d *Disk) Trim(off, n int64) error { return d.Discard(off, n) }

// zeroes is what Zero writes.
var zeroes [1 << 20]byte

// Zero implements nbd.Backend.Zero: it writes zeroes (blkif has no
// write-zeroes operation, and a discard's data is undefined).
func (d *Disk) Zero(off, n int64, mayTrim bool) error {
	if err := d.checkWrite(off, n); err != nil {
		return err
	}
	for n > 0 {
		c := min(n, int64(len(zeroes)))
		if _, err := d.rw(abi.BLKIF_OP_WRITE, zeroes[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// Err is why the disk stopped working, or nil.
func (d *Disk) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// rw splits a read or write into requests of at most the ring's limit,
// puts them all in flight, and waits for them. It returns the bytes of
// the leading requests that succeeded.
func (d *Disk) rw(op uint8, p []byte, off int64) (int, error) {
	max := d.q.maxBytes()
	var reqs []*request
	var err error
	for done := 0; done < len(p); {
		c := min(len(p)-done, max)
		r := &request{op: op, sector: uint64(off+int64(done)) / abi.BlkifSectorSize, n: c, buf: p[done : done+c],
			done: make(chan error, 1)}
		if err = d.submit(r); err != nil {
			break
		}
		reqs = append(reqs, r)
		done += c
	}
	n, ok := 0, true
	for _, r := range reqs {
		rerr := <-r.done
		if rerr != nil && err == nil {
			err = rerr
		}
		if ok = ok && rerr == nil; ok {
			n += r.n
		}
	}
	if err != nil {
		return n, fmt.Errorf("blkfront: %s: %s of %d bytes at %d: %w", d.dev, opName(op), len(p), off, err)
	}
	return n, nil
}

func opName(op uint8) string {
	switch op {
	case abi.BLKIF_OP_READ:
		return "read"
	case abi.BLKIF_OP_WRITE:
		return "write"
	}
	return fmt.Sprintf("op %d", op)
}

// submit reserves an id and pages for r (waiting while there are none),
// fills them, puts r in the ring and pushes it. Pushes are batched: a
// submitter that finds another pushing leaves its request to it, and the
// back end is notified only if it asked to be (its req_event), so a busy
// back end polling the ring takes many requests per event.
func (d *Disk) submit(r *request) error {
	d.mu.Lock()
	if r.n > 0 && !d.q.fits(r) {
		d.mu.Unlock()
		return fmt.Errorf("blkfront: %s: a request of %d bytes: %w", d.dev, r.n, errShortPool)
	}
	for d.err == nil && !d.closed && !d.q.canReserve(r) {
		d.cond.Wait()
	}
	if d.err != nil || d.closed {
		err := d.err
		if err == nil {
			err = ErrClosed
		}
		d.mu.Unlock()
		return err
	}
	d.q.reserve(r)
	d.mu.Unlock()
	d.q.fill(r) // r's pages are its own
	d.mu.Lock()
	if d.err != nil {
		// abandon has answered r, which the caller does not wait for.
		err := d.err
		d.mu.Unlock()
		return err
	}
	d.q.produce(r)
	d.pending = true
	if d.pushing {
		d.mu.Unlock()
		return nil
	}
	d.pushing = true
	for d.pending && d.err == nil {
		d.pending = false
		// No acquire for the back end's req_event: on this host the ring
		// is the same memory, and across hosts a stale req_event at worst
		// skips an event the release itself stands in for (its arrival
		// makes the back end's port pending, docs/memory-model.md).
		notify := d.q.push()
		d.mu.Unlock()
		var err error
		if notify {
			err = d.evt.Notify(d.port)
		} else {
			// A back end on another host may be polling: release the
			// requests to it without an event.
			d.evt.Release(d.port)
		}
		if err != nil {
			d.fail(fmt.Errorf("%w (notify: %v)", ErrBackendGone, err))
		}
		d.mu.Lock()
	}
	d.pushing = false
	d.mu.Unlock()
	return nil
}

// completer takes the back end's responses and answers the requests. It
// spins a little while requests are in flight, then sets rsp_event and
// sleeps on the event channel. It ends when the disk fails or closes.
func (d *Disk) completer() {
	defer close(d.completerDone)
	for {
		d.evt.Acquire()
		n, err := d.reap()
		if err != nil {
			d.fail(err)
		}
		if d.Err() != nil {
			return
		}
		if n > 0 {
			continue
		}
		if d.evt.PeerGone(d.port) {
			d.fail(fmt.Errorf("%w (dom%d's event channel closed: its domain or host went away)", ErrBackendGone, d.be))
			continue
		}
		if d.busy() && ring.Spin(SpinFor, d.ready) {
			continue
		}
		d.mu.Lock()
		more, err := d.q.finalCheck()
		d.mu.Unlock()
		if err != nil {
			d.fail(err)
			continue
		}
		if more {
			continue
		}
		if d.evt.PeerGone(d.port) {
			d.fail(fmt.Errorf("%w (dom%d's event channel closed: its domain or host went away)", ErrBackendGone, d.be))
			continue
		}
		// The callers just answered wait in this P's run queue: let them
		// run before a wait that may hold the P (evtchn.HotWait).
		runtime.Gosched()
		p, err := d.evt.Wait(-1)
		if err != nil {
			d.fail(fmt.Errorf("%w (event channel: %v)", ErrBackendGone, err))
			continue
		}
		d.evt.Unmask(p)
	}
}

// busy reports whether requests are in flight.
func (d *Disk) busy() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.q.busy > 0
}

// ready acquires and reports whether responses wait, for the spin.
func (d *Disk) ready() bool {
	d.evt.Acquire()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.q.pending() || d.err != nil || d.evt.PeerGone(d.port)
}

// reap consumes the responses published, copies the reads' data out,
// returns their pages and answers their callers.
func (d *Disk) reap() (int, error) {
	var done []*request
	var err error
	d.mu.Lock()
	if d.err != nil {
		d.mu.Unlock()
		return 0, nil
	}
	// The indices and the data they cover are seen whole.
	d.evt.View(func() { err = d.q.responses(func(r *request) { done = append(done, r) }) })
	d.mu.Unlock()
	for _, r := range done {
		d.q.readOut(r)
	}
	if len(done) > 0 {
		d.mu.Lock()
		for _, r := range done {
			d.q.release(r)
		}
		d.cond.Broadcast()
		d.mu.Unlock()
	}
	for _, r := range done {
		r.done <- r.err
	}
	return len(done), err
}

// fail stops the disk: err is every request's answer from now on, and
// the requests in flight get it at once.
func (d *Disk) fail(err error) {
	d.mu.Lock()
	if d.err == nil {
		d.err = err
	}
	err = d.err
	reqs := d.q.abandon()
	d.cond.Broadcast()
	d.mu.Unlock()
	for _, r := range reqs {
		r.done <- err
	}
	d.evt.Notify(d.kick) // wake the completer
}

// Close ends the disk as Linux's blkfront does: it waits for the
// requests in flight (up to Options.CloseTimeout), goes to Closing,
// waits for the back end to close (or to be gone), unbinds the event
// channel, ends the grants of the ring and the pool (once the back end
// has unmapped them) and goes to Closed. Requests after Close fail with
// ErrClosed.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

func (d *Disk) close() error {
	d.mu.Lock()
	d.closed = true
	d.cond.Broadcast() // submitters waiting for room give up
	t := time.AfterFunc(d.opts.CloseTimeout, func() { d.fail(ErrClosed) })
	for d.err == nil && d.q.busy > 0 {
		d.cond.Wait()
	}
	d.mu.Unlock()
	t.Stop()
	d.fail(ErrClosed)
	<-d.completerDone
	d.stopWatch()
	<-d.watchDone
	var errs []error
	errs = append(errs, blkif.WriteState(d.xs, d.fdir, blkif.StateClosing))
	if !d.evt.PeerGone(d.port) {
		ctx, cancel := context.WithTimeout(context.Background(), d.opts.CloseTimeout)
		_, err := blkif.WaitState(ctx, d.xs, d.bdir, blkif.State.Closing)
		cancel()
		if err != nil && !errors.Is(err, blkif.ErrGone) {
			errs = append(errs, fmt.Errorf("blkfront: %s: waiting for the back end to close: %w", d.dev, err))
		}
	}
	errs = append(errs, d.evt.Close())
	unshareLater(d.g, d.poolShare)
	unshareLater(d.g, d.ringShare)
	errs = append(errs, blkif.WriteState(d.xs, d.fdir, blkif.StateClosed))
	return errors.Join(errs...)
}
