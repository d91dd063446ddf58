package server

import (
	"context"
	"io"
	"sync"

	"shi/internal/xenstore/wire"
)

// Outbox queues the messages for one connection. Replies are bounded by
// the reader, which stops taking requests while MaxOutstanding replies are
// unsent; watch events beyond MaxQueuedEvents are dropped (and counted),
// so a client that never reads cannot grow the agent's memory.
type Outbox struct {
	maxReplies, maxEvents int

	// wmu serialises writes to the connection and guards buf. The reader
	// writes its own replies (no hand-off on the request path); the writer
	// goroutine writes watch events caused by other connections.
	wmu sync.Mutex
	buf []byte

	mu      sync.Mutex
	q       []wire.Msg
	replies int // replies in q
	events  int // events in q
	dropped uint64
	closed  bool
	wake    chan struct{} // signalled when q gains a message or room appears
}

// NewOutbox returns an outbox with the given limits.
func NewOutbox(maxReplies, maxEvents int) *Outbox {
	return &Outbox{maxReplies: maxReplies, maxEvents: maxEvents, wake: make(chan struct{}, 1)}
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Push queues a message without blocking; it reports false when a watch
// event was dropped.
func (o *Outbox) Push(m wire.Msg, event bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if event {
		if o.events >= o.maxEvents {
			o.dropped++
			return false
		}
		o.events++
	} else {
		o.replies++
	}
	o.q = append(o.q, m)
	o.signal()
	return true
}

// Dropped is the number of watch events dropped so far.
func (o *Outbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// take removes and returns everything queued.
func (o *Outbox) take() ([]wire.Msg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.q
	o.q = nil
	o.replies, o.events = 0, 0
	return q, o.closed
}

func (o *Outbox) isClosed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.closed
}

// hasRoom reports whether the reader may take another request.
func (o *Outbox) hasRoom() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.replies < o.maxReplies || o.closed
}

// waitRoom blocks until fewer than maxReplies replies are unsent.
// Register-then-check: the writer signals roomCh after each flush.
func (o *Outbox) waitRoom(ctx context.Context, room <-chan struct{}) error {
	for !o.hasRoom() {
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// flush writes everything queued to w.
func (o *Outbox) flush(w io.Writer) error {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	q, _ := o.take()
	if len(q) == 0 {
		return nil
	}
	o.buf = o.buf[:0]
	for i := range q {
		o.buf = q[i].Append(o.buf)
	}
	_, err := w.Write(o.buf)
	if cap(o.buf) > 64<<10 {
		o.buf = nil // do not pin a burst's buffer
	}
	return err
}

func (o *Outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}
