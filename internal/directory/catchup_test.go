package directory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shi/guest/xs"
	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
)

func write(path, value string) []byte {
	return XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: path, Value: []byte(value)})
}

// TestRestartAppliesOwnLog: a node restarted on its data dir has applied
// again, from its own log, everything it had applied before it stopped,
// by the time NewNode returns: before any leader is elected, and though
// it never took a snapshot.
func TestRestartAppliesOwnLog(t *testing.T) {
	dir := t.TempDir()
	r := NewReplica(xenstore.DefaultQuota())
	n, err := NewNode(NodeConfig{
		ID: "a", BindAddr: "127.0.0.1:0", DataDir: dir,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond,
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap([]Server{{ID: "a", Address: n.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx := context.Background()
	for i := range 30 {
		if _, _, err := n.Apply(ctx, write(fmt.Sprintf("/k/%d", i), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	applied := r.Applied()
	n.Shutdown()

	// Raft's default timeouts: no election for a second at least.
	r2 := NewReplica(xenstore.DefaultQuota())
	n2, err := NewNode(NodeConfig{ID: "a", BindAddr: "127.0.0.1:0", DataDir: dir}, r2)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown()
	if !r2.CaughtUp() || r2.Applied() < applied {
		t.Fatalf("restarted: applied %d (floor %d), had applied %d before", r2.Applied(), r2.Floor(), applied)
	}
	for i := range 30 {
		n := r2.State().Get(fmt.Sprintf("/k/%d", i))
		if n == nil || string(n.Value) != fmt.Sprint(i) {
			t.Fatalf("/k/%d after the restart: %+v", i, n)
		}
	}
}

// TestBackendWaitsUntilCaughtUp: a replica that has not yet applied what
// its host had applied before a restart answers nothing from its older
// tree: a read waits for it, and gets EAGAIN when the wait is over, never
// ENOENT.
func TestBackendWaitsUntilCaughtUp(t *testing.T) {
	r := NewReplica(xenstore.DefaultQuota())
	r.ApplyEntry(1, write("/a", "1"))
	r.SetFloor(3)
	local := NewLocal(r)
	b := &Backend{R: r, C: local, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Commit: 300 * time.Millisecond}
	sock := filepath.Join(t.TempDir(), "xs.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go server.New(server.Config{Backend: b, Quota: xenstore.DefaultQuota()}).Serve(ctx, ln)
	c, err := xs.Open(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	start := time.Now()
	if _, err := c.Read("/b"); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("read before catching up: %v, want EAGAIN", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("EAGAIN after %v: the read did not wait", d)
	}
	// The rest arrives while a read waits: it is answered from the tree
	// caught up.
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.ApplyEntry(2, write("/b", "2"))
		r.ApplyEntry(3, write("/c", "3"))
	}()
	if v, err := c.Read("/b"); err != nil || string(v) != "2" {
		t.Fatalf("read while catching up: %q %v", v, err)
	}
	local.index = 3
	if err := c.Write("/d", []byte("4")); err != nil {
		t.Fatalf("write once caught up: %v", err)
	}
}
