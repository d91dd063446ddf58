package console

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
)

// ErrInputFull means keystrokes were dropped: the domain does not read
// its console.
var ErrInputFull = errors.New("console: the domain is not reading its input")

// Back is the back end's end of one console: it moves out[] into a Log
// and queued keystrokes into in[].
type Back struct {
	r *rings
	g *gnttab.Handle
	m *gnttab.Mapping

	// inMu serialises writes to in[]: Input writes what fits at once
	// (a keystroke reaches the domain without waking the loop), the
	// loop writes what waited for room.
	inMu   sync.Mutex
	queued []byte // keystrokes waiting for room in in[]
}

// maxQueued bounds the keystrokes a back end holds for a domain that
// does not read them.
const maxQueued = 64 << 10

// ConnectBack maps dom's console page (grant ref) and binds its port, as
// xenconsoled does for a domain it finds in XenStore.
func ConnectBack(hvc *hv.Conn, dom uint32, ref uint32, port uint32) (b *Back, err error) {
	evt, err := evtchn.Open(hvc)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	defer func() {
		if err != nil {
			evt.Close()
		}
	}()
	lp, err := evt.BindInterdomain(evtchn.DomID(dom), evtchn.Port(port))
	if err != nil {
		return nil, fmt.Errorf("console: bind dom%d's port %d: %w", dom, port, err)
	}
	kick, err := evt.BindIPI()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	g := gnttab.Open(hvc)
	m, err := g.Map(evtchn.DomID(dom), []gnttab.Ref{gnttab.Ref(ref)}, true)
	if err != nil {
		return nil, fmt.Errorf("console: map dom%d's grant %d: %w", dom, ref, err)
	}
	r, err := newRings(m.Bytes(), evt, lp, kick)
	if err != nil {
		g.Unmap(m)
		return nil, err
	}
	return &Back{r: r, g: g, m: m}, nil
}

// Input implements Sink.Input: the keystrokes go into in[] at once, or
// wait for room there (up to maxQueued; past it they are dropped with
// ErrInputFull).
func (b *Back) Input(p []byte) error {
	b.inMu.Lock()
	moved, err := b.flushInputLocked()
	if err == nil && len(b.queued) == 0 {
		var n int
		n, err = b.r.write(b.r.in, p)
		p, moved = p[n:], moved || n > 0
	}
	full := false
	if err == nil && len(p) > 0 {
		room := maxQueued - len(b.queued)
		full = len(p) > room
		b.queued = append(b.queued, p[:min(len(p), room)]...)
	}
	b.inMu.Unlock()
	if err != nil {
		return err
	}
	if moved {
		if err := b.r.evt.Notify(b.r.port); err != nil {
			return err
		}
	}
	if full {
		return ErrInputFull
	}
	return nil
}

// flushInputLocked writes queued keystrokes that now fit.
// Preconditions: b.inMu held.
func (b *Back) flushInputLocked() (bool, error) {
	if len(b.queued) == 0 {
		return false, nil
	}
	n, err := b.r.write(b.r.in, b.queued)
	b.queued = b.queued[n:]
	if len(b.queued) == 0 {
		b.queued = nil
	}
	return n > 0, err
}

// Run moves output into log and input into the ring until ctx ends or
// the front end goes (ErrPeerGone, after what it wrote last is in log).
func (b *Back) Run(ctx context.Context, log *Log) error {
	stop := context.AfterFunc(ctx, func() { b.r.evt.Notify(b.r.kick) })
	defer stop()
	var buf [chunk]byte
	freed := 0 // out[] read since the front end was last notified
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		moved, notify := false, false
		// At most one chunk of output per pass, then input: a flood
		// of output never starves keystrokes (Ctrl-C must get through).
		n, err := b.r.read(b.r.out, buf[:])
		if err != nil {
			return err
		}
		if n > 0 {
			log.Append(buf[:n])
			moved, notify = true, consumed(b.r.out, &freed, n)
		}
		b.inMu.Lock()
		in, err := b.flushInputLocked()
		b.inMu.Unlock()
		if err != nil {
			return err
		}
		if in {
			moved, notify = true, true
		}
		if moved {
			if notify {
				freed = 0
			}
			if err := b.r.publish(notify); err != nil {
				return err
			}
			continue
		}
		if b.r.evt.PeerGone(b.r.port) {
			// What it wrote before it went is in the page already.
			for {
				n, err := b.r.read(b.r.out, buf[:])
				if err != nil || n == 0 {
					return ErrPeerGone
				}
				log.Append(buf[:n])
			}
		}
		// Let the viewers this pass woke run first, here: a wait
		// blocks this thread with its P, and they would wait for
		// another to steal them.
		runtime.Gosched()
		if err := b.r.sleep(pollEvery); err != nil {
			return err
		}
	}
}

// Close unmaps the page and closes the ports.
func (b *Back) Close() error {
	return errors.Join(b.g.Unmap(b.m), b.r.evt.Close())
}
