package directory

import (
	"context"
	"sync"

	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
	"shi/internal/xenstore/wire"
)

// Replica is one host's copy of the directory together with that host's
// XenStore clients: entries are applied to the FSM and the watch events
// they fire go straight to this host's connections. The raft FSM and the
// local committer both feed ApplyEntry.
//
// Lock order: Replica.mu, then Outbox locks (Outbox.Push never blocks).
type Replica struct {
	mu      sync.Mutex
	fsm     *FSM
	eng     *xenstore.Engine
	out     map[xenstore.ConnID]*server.Outbox
	next    xenstore.ConnID
	applied chan struct{} // closed and replaced whenever an entry is applied
	floor   uint64        // what must be applied before serving (SetFloor)
}

// NewReplica returns a replica over an empty FSM.
func NewReplica(q xenstore.Quota) *Replica {
	f := NewFSM(q)
	return &Replica{fsm: f, eng: xenstore.NewEngine(f.State()), out: map[xenstore.ConnID]*server.Outbox{}, applied: make(chan struct{})}
}

// ApplyEntry applies a committed entry and delivers its watch events. An
// entry at or below the applied index is skipped: a restarted agent
// applies again from its own log what it had applied (Node.reapply), and
// Raft may hand over the same entries.
func (r *Replica) ApplyEntry(index uint64, data []byte) Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index <= r.fsm.Applied() {
		return Response{}
	}
	resp := r.fsm.Apply(index, data)
	r.deliverLocked(r.eng.Applied(r.fsm.State(), resp.Xs))
	close(r.applied)
	r.applied = make(chan struct{})
	return resp
}

// deliverLocked pushes deliveries to their outboxes.
// Preconditions: r.mu held.
func (r *Replica) deliverLocked(ds []xenstore.Delivery) {
	for _, d := range ds {
		if o := r.out[d.Conn]; o != nil {
			o.Push(d.Msg, d.Event)
		}
	}
}

// Snapshot captures the state for Raft.
func (r *Replica) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Snapshot()
}

// Restore replaces the state with a snapshot. What changed is unknown, so
// every watch fires once (spurious events are allowed; clients re-read).
func (r *Replica) Restore(f *FSM) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fsm = f
	r.deliverLocked(r.eng.Reset(f.State()))
	close(r.applied)
	r.applied = make(chan struct{})
}

// Applied is the index of the last applied entry.
func (r *Replica) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Applied()
}

// WaitApplied blocks until entry index has been applied here.
func (r *Replica) WaitApplied(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		done, ch := r.fsm.Applied() >= index, r.applied
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SetFloor sets the index this replica must have applied before it is
// caught up: how far this host had applied before it restarted (from its
// disk). Set once, before anything is served.
func (r *Replica) SetFloor(index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.floor = index
}

// Floor is the index set by SetFloor.
func (r *Replica) Floor() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.floor
}

// CaughtUp reports whether the replica has applied at least what this
// host had applied before it restarted: until then it may answer from an
// older tree than its clients saw, and must not answer at all.
func (r *Replica) CaughtUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Applied() >= r.floor
}

// WaitCaughtUp blocks until the replica is caught up (CaughtUp) or ctx
// ends.
func (r *Replica) WaitCaughtUp(ctx context.Context) error {
	return r.WaitApplied(ctx, r.Floor())
}

// State returns the current XenStore state.
func (r *Replica) State() *xenstore.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.State()
}

// Domains lists the domain table.
func (r *Replica) Domains() []Domain {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Domains()
}

// Domain returns one domain.
func (r *Replica) Domain(id uint32) (Domain, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Domain(id)
}

// open registers a XenStore connection.
func (r *Replica) open(dom uint32, out *server.Outbox) xenstore.ConnID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.eng.Open(r.next, dom)
	r.out[r.next] = out
	return r.next
}

func (r *Replica) close(id xenstore.ConnID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eng.Close(id)
	delete(r.out, id)
}

// request runs a request through the engine; a change to replicate comes
// back as a command.
func (r *Replica) request(id xenstore.ConnID, m wire.Msg) *xenstore.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds, cmd := r.eng.Request(id, m)
	r.deliverLocked(ds)
	return cmd
}

func (r *Replica) push(id xenstore.ConnID, m wire.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.out[id]; o != nil {
		o.Push(m, false)
	}
}
