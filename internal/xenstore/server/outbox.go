package server

import (
	"context"
	"sync"

	"shi/internal/xenstore/wire"
)

// Outbox queues the messages for one connection. Replies are bounded by
// the reader, which stops taking requests while MaxOutstanding replies are
// unsent; watch events beyond MaxQueuedEvents are dropped (and counted),
// so a client that never reads cannot grow the agent's memory.
type Outbox struct {
	maxReplies, maxEvents int

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

func (o *Outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}
