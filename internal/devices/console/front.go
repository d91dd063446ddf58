package console

import (
	"fmt"
	"strconv"
	"sync"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
	"shi/guest/xs"
)

// XenStore paths of a console.
func FrontPath(dom uint32) string {
	return "/local/domain/" + strconv.FormatUint(uint64(dom), 10) + "/console"
}

// BackendDir is where a driver domain's console back ends are listed.
func BackendDir(driver uint32) string {
	return "/local/domain/" + strconv.FormatUint(uint64(driver), 10) + "/backend/console"
}

// BackendPath is the back-end directory of dom's console.
func BackendPath(driver, dom uint32) string {
	return BackendDir(driver) + "/" + strconv.FormatUint(uint64(dom), 10) + "/0"
}

// Keys below BackendPath besides Xen's (frontend, frontend-id, online,
// state, protocol).
const (
	// KeySize is the window size the writer's terminal has, "COLSxROWS",
	// written by the back end; a front end with a terminal follows it.
	KeySize = "size"
	// KeyLog is the transcript file on the back end's host (console_log).
	KeyLog = "log"
)

// Front is a domain's end of its console: it writes output into out[]
// and reads keystrokes from in[]. Write and Read may be called from
// different goroutines; one loop of its own does the ring work.
type Front struct {
	r     *rings
	g     *gnttab.Handle
	share *gnttab.Share

	writes   chan []byte   // handed to the loop
	wrote    chan error    // the loop's answer to each write
	input    chan []byte   // keystrokes for Read
	done     chan struct{} // closed when the loop ends
	closing  chan struct{}
	once     sync.Once
	loopOnce sync.Once // the loop starts with the first Write or Read

	mu      sync.Mutex
	err     error  // why the loop ended
	partial []byte // input read from the ring, not yet returned by Read
}

// OpenFront sets up the console of the domain behind hvc as Xen's
// toolstack and console front end do together: it shares a page with the
// back end named by <console>/backend-id, allocates an unbound port for
// it, and publishes ring-ref (a grant ref, as Xen's secondary consoles
// do) and port under /local/domain/<self>/console.
func OpenFront(hvc *hv.Conn, xsc *xs.Client) (f *Front, err error) {
	self := uint32(hvc.DomID())
	dir := FrontPath(self)
	v, err := xsc.Read(dir + "/backend-id")
	if err != nil {
		return nil, fmt.Errorf("console: read %s/backend-id: %w", dir, err)
	}
	be, err := parseUint("backend-id", v, 16)
	if err != nil {
		return nil, err
	}
	evt, err := evtchn.Open(hvc)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	defer func() {
		if err != nil {
			evt.Close()
		}
	}()
	port, err := evt.AllocUnbound(evtchn.DomID(be))
	if err != nil {
		return nil, fmt.Errorf("console: port for dom%d: %w", be, err)
	}
	kick, err := evt.BindIPI()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	g := gnttab.Open(hvc)
	share, err := g.SharePages(evtchn.DomID(be), 1, true)
	if err != nil {
		return nil, fmt.Errorf("console: share the ring with dom%d: %w", be, err)
	}
	defer func() {
		if err != nil {
			g.Unshare(share)
		}
	}()
	// The page is zero (empty rings) and the back end has not mapped it
	// yet: nothing to report before the grant is known.
	r, err := newRings(share.Bytes(), evt, port, kick)
	if err != nil {
		return nil, err
	}
	err = xsc.Transaction(func(t *xs.Tx) error {
		if err := t.Write(dir+"/ring-ref", []byte(strconv.FormatUint(uint64(share.Refs[0]), 10))); err != nil {
			return err
		}
		return t.Write(dir+"/port", []byte(strconv.FormatUint(uint64(port), 10)))
	})
	if err != nil {
		return nil, fmt.Errorf("console: publish ring-ref and port: %w", err)
	}
	// writes has room for the one write in flight, so that Write hands
	// it over and then kicks the loop, which may be asleep.
	f = &Front{r: r, g: g, share: share, writes: make(chan []byte, 1), wrote: make(chan error),
		input: make(chan []byte, 16), done: make(chan struct{}), closing: make(chan struct{})}
	return f, nil
}

// start runs the loop that Write and Read hand their work to, once.
func (f *Front) start() { f.loopOnce.Do(func() { go f.loop() }) }

// Write writes all of p to the console, waiting while the ring is full
// (a back end that does not keep up throttles the domain).
func (f *Front) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	f.start()
	select {
	case f.writes <- p:
	case <-f.done:
		return 0, f.loopErr()
	}
	f.r.evt.Notify(f.r.kick)
	select {
	case err := <-f.wrote:
		if err != nil {
			return 0, err
		}
		return len(p), nil
	case <-f.done:
		return 0, f.loopErr()
	}
}

// Read returns keystrokes, waiting for some.
func (f *Front) Read(p []byte) (int, error) {
	f.start()
	f.mu.Lock()
	if len(f.partial) == 0 {
		f.mu.Unlock()
		select {
		case b := <-f.input:
			f.r.evt.Notify(f.r.kick) // room in input: the loop may read more
			f.mu.Lock()
			f.partial = b
		case <-f.done:
			return 0, f.loopErr()
		}
	}
	n := copy(p, f.partial)
	f.partial = f.partial[n:]
	f.mu.Unlock()
	return n, nil
}

// Flushed reports whether the back end has consumed all output.
func (f *Front) Flushed() bool {
	f.r.evt.Acquire()
	n, err := f.r.out.Readable()
	return err != nil || n == 0
}

func (f *Front) loopErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// loop moves output into out[] and keystrokes out of in[], and sleeps on
// the event channel when neither can move. Register-then-check: the back
// end notifies after every change to the rings, and a notification that
// comes between a check and the sleep leaves the port pending.
func (f *Front) loop() {
	err := f.run()
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	close(f.done)
}

func (f *Front) run() error {
	var pend []byte
	var inbuf [1024]byte
	freed := 0 // in[] read since the back end was last notified
	for {
		select {
		case <-f.closing:
			return errClosed
		default:
		}
		moved, notify := false, false
		if pend == nil {
			select {
			case pend = <-f.writes:
			default:
			}
		}
		if len(pend) > 0 {
			n, err := f.r.write(f.r.out, pend)
			if err != nil {
				f.wrote <- err
				return err
			}
			if n > 0 {
				moved, notify = true, true
				if pend = pend[n:]; len(pend) == 0 {
					pend = nil
					f.wrote <- nil
				}
			}
		}
		if len(f.input) < cap(f.input) {
			n, err := f.r.read(f.r.in, inbuf[:])
			if err != nil {
				return err
			}
			if n > 0 {
				moved = true
				notify = consumed(f.r.in, &freed, n) || notify
				f.input <- append([]byte(nil), inbuf[:n]...)
			}
		}
		if moved {
			if notify {
				freed = 0
			}
			if err := f.r.publish(notify); err != nil {
				return err
			}
			continue
		}
		if err := f.r.sleep(pollEvery); err != nil {
			if pend != nil {
				f.wrote <- err
			}
			return err
		}
	}
}

// Close stops the loop. The page stays shared while the back end maps it
// (the domain's end releases it).
func (f *Front) Close() error {
	f.once.Do(func() {
		close(f.closing)
		f.start() // a loop that never ran ends at once
		f.r.evt.Notify(f.r.kick)
		<-f.done
		f.r.evt.Close()
		f.g.Unshare(f.share)
	})
	return nil
}
