package directory

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"shi/internal/abi"
	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
	"shi/internal/xenstore/wire"
)

// watchOn opens a connection of dom on r whose outbox holds one event, and
// registers a watch; XS_WATCH's own first event fills the outbox, so every
// later event for the connection shows up in out.Dropped().
func watchOn(t *testing.T, r *Replica, dom uint32, path string) *server.Outbox {
	t.Helper()
	out := server.NewOutbox(16, 1)
	id := r.open(dom, out)
	if cmd := r.request(id, wire.Msg{Type: abi.XS_WATCH, Payload: wire.JoinStrings(path, "tok")}); cmd != nil {
		t.Fatalf("XS_WATCH made a command %+v", cmd)
	}
	if out.Dropped() != 0 {
		t.Fatalf("watch %s: events dropped before the restore", path)
	}
	return out
}

// A snapshot restored on a lagging host replaces the tree with one where
// /a/b changed. Its comment promises "every watch fires once", but the
// restore fires an event for "/" only, which matches watches on exactly
// "/": a watch on /a/b never learns that its node changed.
func TestReviewRestoreFiresEveryWatch(t *testing.T) {
	r := NewReplica(xenstore.DefaultQuota())
	out := watchOn(t, r, 0, "/a/b")
	f := NewFSM(xenstore.DefaultQuota())
	f.Apply(1, XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: "/a/b", Value: []byte("1")}))
	r.Restore(f)
	if out.Dropped() == 0 {
		t.Fatal("watch on /a/b did not fire when a snapshot changed /a/b")
	}
}

// An unprivileged connection (a domain, through server.Config.Identify)
// watching @releaseDomain, as vchan-socket-proxy does, crashes the host
// when a snapshot is restored: Restore's special events carry no
// permissions, and Engine.permitted indexes ps[0] of a nil list.
func TestReviewRestoreWithUnprivilegedSpecialWatch(t *testing.T) {
	r := NewReplica(xenstore.DefaultQuota())
	watchOn(t, r, 5, xenstore.ReleaseDomain)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Restore panicked: %v", p)
		}
	}()
	r.Restore(NewFSM(xenstore.DefaultQuota()))
}

func startLeader(t *testing.T) (*Node, *Replica) {
	t.Helper()
	r := NewReplica(xenstore.DefaultQuota())
	n, err := NewNode(NodeConfig{
		ID: "a", BindAddr: "127.0.0.1:0",
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	if err := n.Bootstrap([]Server{{ID: "a", Address: n.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	// Ready, not IsLeader: reads are refused until the term's barrier has
	// applied, and a test that stalls the FSM before then never gets one.
	deadline := time.Now().Add(5 * time.Second)
	for !n.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("no leader after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n, r
}

// With -consistent-reads a read waits until the replica has applied the
// leader's read index. Raft's own entries (the leader's no-op of each term,
// configuration changes) count in CommitIndex but never reach the FSM, so
// Replica.Applied stays below the read index until the next XenStore or
// domain write: on an idle cluster, after an election or a voter change,
// every read waits the commit timeout and fails with EAGAIN.
func TestReviewReadIndexOnIdleCluster(t *testing.T) {
	n, r := startLeader(t)
	c := &Cluster{Node: n}
	b := &Backend{R: r, C: c, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Commit: time.Second, ReadIndex: c.ReadIndex}
	out := server.NewOutbox(16, 16)
	id := r.open(0, out)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	idx, err := c.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	defer wcancel()
	if err := r.WaitApplied(wctx, idx); err != nil {
		t.Errorf("read index %d never applied (replica at %d): %v", idx, r.Applied(), err)
	}
	// The same through the XenStore backend: a read of "/" on an idle
	// leader must succeed.
	start := time.Now()
	if err := b.Handle(ctx, id, wire.Msg{Type: abi.XS_READ, Payload: wire.JoinStrings("/")}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a read on an idle one-host cluster took %v", d)
	}
}

// Every replica panics on a log entry of unknown type (by design, so that
// replicas never drift). The leader's /v1/internal/commit appends whatever
// body it is given, so one POST of a single byte puts a poison pill in the
// log: every host crashes applying it, and again after each restart. The
// entry must be checked before it is appended (here: before anything
// else, so that a follower or a stale leader reject it too).
func TestReviewServeCommitRejectsUnknownEntry(t *testing.T) {
	r := NewReplica(xenstore.DefaultQuota())
	n, err := NewNode(NodeConfig{ID: "a", BindAddr: "127.0.0.1:0"}, r)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	c := &Cluster{Node: n}
	for _, body := range [][]byte{{0x09}, {0x7f, 1, 2}} {
		w := httptest.NewRecorder()
		c.ServeCommit(w, httptest.NewRequest(http.MethodPost, "/v1/internal/commit", bytes.NewReader(body)))
		if w.Code != http.StatusBadRequest {
			t.Errorf("entry %x: status %d, want 400 (rejected before the log)", body, w.Code)
		}
	}
}
