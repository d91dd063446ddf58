package server

import (
	"context"
	"sync"

	"shi/internal/xenstore"
	"shi/internal/xenstore/wire"
)

// Local is a Backend for a store that is not replicated (shi agent -dev):
// one engine behind one mutex, each command applied at once.
type Local struct {
	mu   sync.Mutex
	e    *xenstore.Engine
	next xenstore.ConnID
	out  map[xenstore.ConnID]*Outbox
}

var _ Backend = (*Local)(nil)

// NewLocal returns a backend over a fresh store.
func NewLocal(q xenstore.Quota) *Local {
	return &Local{e: xenstore.NewEngine(xenstore.NewState(q)), out: map[xenstore.ConnID]*Outbox{}}
}

// Open implements Backend.Open.
func (l *Local) Open(dom uint32, out *Outbox) xenstore.ConnID {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	l.e.Open(l.next, dom)
	l.out[l.next] = out
	return l.next
}

// Close implements Backend.Close.
func (l *Local) Close(id xenstore.ConnID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.e.Close(id)
	delete(l.out, id)
}

// Handle implements Backend.Handle. Deliveries are pushed under the lock so
// that every connection sees events in the order they were applied.
func (l *Local) Handle(_ context.Context, id xenstore.ConnID, m wire.Msg) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.e.Handle(id, m) {
		if o := l.out[d.Conn]; o != nil {
			o.Push(d.Msg, d.Event)
		}
	}
	return nil
}

// Apply applies a command as the agent itself (domain 0), e.g. to write
// the toolstack's keys, firing watches like any client's change.
func (l *Local) Apply(c *xenstore.Command) xenstore.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, res := l.e.State().Apply(c)
	for _, d := range l.e.Applied(s, res) {
		if o := l.out[d.Conn]; o != nil {
			o.Push(d.Msg, d.Event)
		}
	}
	return res
}

// State returns the current state.
func (l *Local) State() *xenstore.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.e.State()
}
