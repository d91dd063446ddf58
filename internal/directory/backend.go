package directory

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"shi/internal/abi"
	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
	"shi/internal/xenstore/wire"
)

// Committer replicates log entries. Commit returns once the entry is
// committed, with its index and the response of applying it (on the
// leader). Local for -dev, Raft for a cluster.
type Committer interface {
	Commit(ctx context.Context, entry []byte) (uint64, Response, error)
}

// ErrNoQuorum means the entry could not be committed: this host cannot
// reach a majority of the directory's voters. XenStore clients get EROFS:
// the store is read-only from here until the partition heals.
var ErrNoQuorum = errors.New("directory: no quorum reachable; the store is read-only here")

// Backend serves XenStore connections from a Replica, committing changes
// through a Committer. It implements server.Backend.
type Backend struct {
	R      *Replica
	C      Committer
	Log    *slog.Logger
	Commit time.Duration // how long a change may wait for a quorum

	// ReadIndex, when set, makes reads linearizable: a read (or the
	// snapshot a transaction starts from) first waits until this replica
	// has applied every change acknowledged before it. Unset, reads are
	// served from the local replica at once, with read-your-writes per
	// connection.
	ReadIndex func(ctx context.Context) (uint64, error)

	// acked is the highest index of a change this host has acknowledged.
	// A read here first waits until this replica has applied it, so that
	// whatever this host said was done, every client of this host sees —
	// a script's xenstore-write then xenstore-read, two processes, works.
	acked atomic.Uint64
}

var _ server.Backend = (*Backend)(nil)

// Open implements server.Backend.Open.
func (b *Backend) Open(dom uint32, out *server.Outbox) xenstore.ConnID { return b.R.open(dom, out) }

// Close implements server.Backend.Close.
func (b *Backend) Close(id xenstore.ConnID) { b.R.close(id) }

// Handle implements server.Backend.Handle. A change is answered once it
// is committed; a later read (or transaction start) on this host first
// waits until this replica has applied every change it acknowledged, so
// clients of a host read what it acknowledged without every write waiting
// for the local copy.
func (b *Backend) Handle(ctx context.Context, id xenstore.ConnID, m wire.Msg) error {
	if !b.R.CaughtUp() {
		// A restarted agent must not answer from an older tree than it
		// served before (a read of an acknowledged node would say ENOENT).
		// It applies its own log again at start; if that is not enough,
		// the rest comes from the leader. Wait a while, then EAGAIN.
		wctx, cancel := context.WithTimeout(ctx, b.Commit)
		err := b.R.WaitCaughtUp(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.R.push(id, wire.ErrorReply(m, syscall.EAGAIN))
			return nil
		}
	}
	if isRead(m) {
		b.catchUp(ctx)
		if b.ReadIndex != nil {
			if err := b.readBarrier(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.R.push(id, wire.ErrorReply(m, syscall.EAGAIN))
				return nil
			}
		}
	}
	cmd := b.R.request(id, m)
	if cmd == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, b.Commit)
	defer cancel()
	idx, resp, err := b.C.Commit(cctx, XenstoreEntry(cmd))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.Log.Warn("xenstore: change not committed", "req", m.String(), "err", err)
		errno := syscall.EROFS // no quorum: read-only here
		if errors.Is(err, ErrIndeterminate) {
			errno = syscall.EIO
		}
		b.R.push(id, wire.ErrorReply(m, errno))
		return nil
	}
	for {
		cur := b.acked.Load()
		if idx <= cur || b.acked.CompareAndSwap(cur, idx) {
			break
		}
	}
	b.R.push(id, xenstore.CompleteReply(m, resp.Xs))
	return nil
}

// catchUp waits until this replica has applied every change this host
// acknowledged. If it cannot (this host is cut off and lags), the read goes
// on from the local replica after the commit timeout, and says so in the
// log.
func (b *Backend) catchUp(ctx context.Context) {
	idx := b.acked.Load()
	if idx == 0 || b.R.Applied() >= idx {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, b.Commit)
	defer cancel()
	if err := b.R.WaitApplied(wctx, idx); err != nil && ctx.Err() == nil {
		b.Log.Warn("xenstore: this host lags behind a change it acknowledged; reading anyway", "index", idx)
	}
}

// isRead reports whether m reads the tree outside a transaction, or
// starts one (its snapshot is a read).
func isRead(m wire.Msg) bool {
	switch m.Type {
	case abi.XS_READ, abi.XS_DIRECTORY, abi.XS_GET_PERMS, abi.XS_DIRECTORY_PART:
		return m.TxID == 0
	case abi.XS_TRANSACTION_START:
		return true
	}
	return false
}

func (b *Backend) readBarrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.Commit)
	defer cancel()
	idx, err := b.ReadIndex(ctx)
	if err != nil {
		return err
	}
	return b.R.WaitApplied(ctx, idx)
}

// Local is the Committer of a one-host directory: entries apply at once.
type Local struct {
	R     *Replica
	index uint64
	mu    chan struct{}
}

// NewLocal returns a committer that applies entries directly to r.
func NewLocal(r *Replica) *Local { return &Local{R: r, mu: make(chan struct{}, 1)} }

// Commit implements Committer.
func (l *Local) Commit(ctx context.Context, entry []byte) (uint64, Response, error) {
	select {
	case l.mu <- struct{}{}:
	case <-ctx.Done():
		return 0, Response{}, ctx.Err()
	}
	defer func() { <-l.mu }()
	l.index++
	return l.index, l.R.ApplyEntry(l.index, entry), nil
}
