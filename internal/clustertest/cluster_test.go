package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"shi/guest/xs"
)

// commitTimeout is the agents' -commit-timeout in these tests: how long a
// cut-off host may take to refuse a write.
const commitTimeout = 2 * time.Second

// TestCluster3 runs the fault scenarios on 3 hosts, snapshotting every 64
// log entries, so that a restart comes back from a snapshot.
func TestCluster3(t *testing.T) { testCluster(t, 3, 64) }

// TestCluster5 runs them on 5 hosts with Raft's default snapshot
// threshold, so that a restart replays its log.
func TestCluster5(t *testing.T) { testCluster(t, 5, 0) }

func testCluster(t *testing.T, n int, snapshotThreshold uint64) {
	start := time.Now()
	c := Start(t, Options{Hosts: n, SnapshotThreshold: snapshotThreshold, CommitTimeout: commitTimeout})
	t.Logf("%d hosts up and agreed on a leader in %v", n, time.Since(start).Round(time.Millisecond))
	all := map[string]string{} // every acknowledged write of every step
	step := func(name string, fn func(t *testing.T) map[string]string) {
		t.Run(name, func(t *testing.T) {
			s := time.Now()
			maps.Copy(all, fn(t))
			t.Logf("%s took %v", name, time.Since(s).Round(time.Millisecond))
		})
	}
	step("replicate", func(t *testing.T) map[string]string { return testReplicate(t, c) })
	step("watch", func(t *testing.T) map[string]string { return testWatch(t, c) })
	step("kill-leader", func(t *testing.T) map[string]string { return testKillLeader(t, c) })
	step("cut-follower", func(t *testing.T) map[string]string { return testCut(t, c, false) })
	step("cut-leader", func(t *testing.T) map[string]string { return testCut(t, c, true) })
	step("restart", func(t *testing.T) map[string]string { return testRestart(t, c, snapshotThreshold) })
	step("freeze-leader", func(t *testing.T) map[string]string { return testFreeze(t, c) })
	if n == 3 {
		t.Run("local-reads", func(t *testing.T) { testLocalReads(t, c) })
	}
	t.Run("converged", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.Leader(ctx)
		checkAcked(t, c, others(n), all)
		tree := sameTree(t, c, others(n))
		t.Logf("%d acknowledged writes on every host; %d nodes, the same on every host", len(all), len(tree))
	})
}

// testReplicate: a write on any host reads back at once on its own
// connection and soon on every host, permissions included.
func testReplicate(t *testing.T, c *Cluster) map[string]string {
	want := map[string]string{}
	for _, h := range c.Hosts() {
		x := h.XS()
		p, v := "/test/rep/"+h.Name, "written on "+h.Name
		if err := x.Write(p, []byte(v)); err != nil {
			t.Fatalf("write on %s: %v", h.Name, err)
		}
		if err := readIs(x, p, v); err != nil {
			t.Errorf("%s does not read its own write at once: %v", h.Name, err)
		}
		if err := x.SetPerms(p, xs.Perm{Domid: 0, Access: xs.AccessNone}, xs.Perm{Domid: uint32(h.Index + 1), Access: xs.AccessRead}); err != nil {
			t.Fatalf("set perms on %s: %v", h.Name, err)
		}
		want[p] = v
	}
	for _, h := range c.Hosts() {
		x := h.XS()
		eventually(t, 10*time.Second, "writes of every host on "+h.Name, func() error {
			for _, o := range c.Hosts() {
				p := "/test/rep/" + o.Name
				if err := readIs(x, p, want[p]); err != nil {
					return err
				}
				perms, err := x.GetPerms(p)
				if err != nil {
					return err
				}
				if len(perms) != 2 || perms[1].Domid != uint32(o.Index+1) {
					return fmt.Errorf("perms of %s = %v", p, perms)
				}
			}
			return nil
		})
	}
	sameTree(t, c, c.Up())
	return want
}

// testWatch: a watch set on every host fires there for a write made on
// the leader and for one made on a follower.
func testWatch(t *testing.T, c *Cluster) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := c.Leader(ctx)
	var ws []*xs.Watch
	for _, h := range c.Hosts() {
		w, err := h.XS().Watch("/test/watch", "tok-"+h.Name)
		if err != nil {
			t.Fatalf("watch on %s: %v", h.Name, err)
		}
		waitEvent(t, h, w, "/test/watch") // the event of setting it
		ws = append(ws, w)
	}
	want := map[string]string{}
	for _, from := range []int{l, (l + 1) % len(ws)} {
		h := c.Host(from)
		p := "/test/watch/from-" + h.Name
		if err := h.XS().Write(p, []byte("x")); err != nil {
			t.Fatalf("write on %s: %v", h.Name, err)
		}
		want[p] = "x"
		for i, w := range ws {
			waitEvent(t, c.Host(i), w, p)
		}
	}
	return want
}

// waitEvent waits for an event on path, skipping others.
func waitEvent(t *testing.T, h *Host, w *xs.Watch, path string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("%s: watch closed waiting for %s", h.Name, path)
			}
			if ev.Path == path {
				return
			}
		case <-deadline:
			t.Fatalf("%s: no watch event for %s", h.Name, path)
		}
	}
}

// testKillLeader: every host writes while the leader is SIGKILLed; the
// others write again within seconds, and every acknowledged write is on
// every host, the old leader included once it is back.
func testKillLeader(t *testing.T, c *Cluster) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := len(c.Hosts())
	l := c.Leader(ctx)
	var ws []*writer
	for _, h := range c.Hosts() {
		ws = append(ws, startWriter(h, "/test/kill/"+h.Name))
	}
	waitAcks(t, ws, time.Time{}, 5)
	killed := time.Now()
	c.Host(l).Kill()
	var rest []*writer
	for i, w := range ws {
		if i != l {
			rest = append(rest, w)
		}
	}
	waitAcks(t, rest, killed, 5)
	var worst time.Duration
	for _, w := range rest {
		at, _ := firstAckAfter(w.Log(), killed)
		worst = max(worst, at.Sub(killed))
	}
	want := map[string]string{}
	for _, w := range ws {
		maps.Copy(want, acked(w.Stop()))
	}
	t.Logf("leader %s killed: every other host wrote again within %v; %d writes acknowledged", c.Host(l).Name, worst.Round(time.Millisecond), len(want))
	if worst > 10*time.Second {
		t.Errorf("writes resumed only after %v", worst)
	}
	// The others agree on a leader among themselves.
	if _, err := c.WaitConverged(ctx, others(n, l)); err != nil {
		t.Fatal(err)
	}
	checkAcked(t, c, others(n, l), want)
	c.Host(l).Start()
	c.Leader(ctx)
	checkAcked(t, c, []int{l}, want)
	return want
}

// waitAcks waits until every writer has had k writes acknowledged that
// started after since.
func waitAcks(t *testing.T, ws []*writer, since time.Time, k int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%d acknowledged writes per host", k), func() error {
		for _, w := range ws {
			got := 0
			var last error
			for _, a := range w.Log() {
				if !a.start.Before(since) {
					if a.err == nil {
						got++
					} else {
						last = a.err
					}
				}
			}
			if got < k {
				return fmt.Errorf("%s: %d acknowledged (last error: %v)", w.h.Name, got, last)
			}
		}
		return nil
	})
}

// testCut: a host cut off (a follower, or the leader) refuses writes with
// EROFS within a bounded time and still serves reads from its replica; the
// majority keeps writing; after healing every host has the same tree.
func testCut(t *testing.T, c *Cluster, leader bool) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := len(c.Hosts())
	l := c.Leader(ctx)
	cut := (l + 1) % n
	if leader {
		cut = l
	}
	ch := c.Host(cut)
	var ws []*writer
	for _, h := range c.Hosts() {
		ws = append(ws, startWriter(h, fmt.Sprintf("/test/cut-%v/%s", leader, h.Name)))
	}
	waitAcks(t, ws, time.Time{}, 5)
	before := acked(ws[cut].Log())
	cutAt := time.Now()
	c.Cut(cut)

	// The cut host's writes fail, with EROFS once it knows it has no
	// quorum. A change already in flight when the cable went may end in
	// EIO: its outcome is unknown.
	eventually(t, commitTimeout+10*time.Second, ch.Name+" refusing writes with EROFS", func() error {
		for _, a := range ws[cut].Log() {
			if !a.start.Before(cutAt) && errors.Is(a.err, syscall.EROFS) {
				return nil
			}
		}
		return errors.New("no EROFS yet")
	})
	first, _ := firstErrAfter(ws[cut].Log(), cutAt)
	var errs []string
	for _, a := range ws[cut].Log() {
		if !a.start.Before(cutAt) && a.err != nil {
			if !errors.Is(a.err, syscall.EROFS) && !errors.Is(a.err, syscall.EIO) {
				t.Errorf("%s: write failed with %v, want EROFS (or EIO for one in flight)", ch.Name, a.err)
			}
			if len(errs) < 4 {
				errs = append(errs, fmt.Sprintf("%v after %v", a.err, a.end.Sub(a.start).Round(time.Millisecond)))
			}
		}
	}
	t.Logf("%s cut off: its first refused write ended %v after the cut; first failures: %v", ch.Name, first.end.Sub(cutAt).Round(time.Millisecond), errs)
	if d := first.end.Sub(cutAt); d > commitTimeout+5*time.Second {
		t.Errorf("%s took %v to refuse a write (commit timeout %v)", ch.Name, d, commitTimeout)
	}
	// Reads are still served there, from its replica.
	x := ch.XS()
	for p, v := range before {
		if err := Within(x, opTimeout, func() error { return readIs(x, p, v) }); err != nil {
			t.Errorf("%s cut off: %v", ch.Name, err)
		}
		break
	}
	// The majority carries on.
	var rest []*writer
	for i, w := range ws {
		if i != cut {
			rest = append(rest, w)
		}
	}
	waitAcks(t, rest, time.Now(), 5)
	want := map[string]string{}
	for _, w := range ws {
		maps.Copy(want, acked(w.Stop()))
	}
	healed := time.Now()
	c.Heal(cut)
	c.Leader(ctx)
	t.Logf("healed: one cluster again after %v", time.Since(healed).Round(time.Millisecond))
	checkAcked(t, c, others(n), want)
	sameTree(t, c, others(n))
	t.Logf("healed: every write and the same tree on every host after %v", time.Since(healed).Round(time.Millisecond))
	return want
}

// testRestart: an agent killed and restarted on its data dir comes back
// with its state. With snapshots on, it is restarted cut off, so that
// what it has can only come from its own snapshot.
func testRestart(t *testing.T, c *Cluster, snapshotThreshold uint64) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := len(c.Hosts())
	l := c.Leader(ctx)
	f := (l + 1) % n
	fh := c.Host(f)
	x := c.Host(l).XS()
	want := map[string]string{}
	write := func(p, v string) {
		t.Helper()
		// A write whose commit's fate is unknown (EIO: leadership moved
		// under it, on a loaded machine) or found no quorum (EROFS, during
		// an election) is written again, as a client would: the same value.
		err := x.Write(p, []byte(v))
		for try := 0; try < 20 && (errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS)); try++ {
			time.Sleep(250 * time.Millisecond)
			err = x.Write(p, []byte(v))
		}
		if err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
		want[p] = v
	}
	for i := range 20 {
		write(fmt.Sprintf("/test/restart/before/%d", i), fmt.Sprint(i))
	}
	if snapshotThreshold > 0 {
		// Fill the log until the follower snapshots past the writes above.
		idx := appliedIndex(t, c.Host(l))
		for i := 0; ; i++ {
			if s, ok := latestSnapshot(fh); ok && s >= idx {
				t.Logf("%s snapshotted at index %d (writes up to %d)", fh.Name, s, idx)
				break
			}
			if i > 50*int(snapshotThreshold) {
				t.Fatalf("%s took no snapshot past index %d", fh.Name, idx)
			}
			write("/test/restart/filler", fmt.Sprint(i))
		}
	}
	fh.Kill()
	for i := range 20 {
		write(fmt.Sprintf("/test/restart/while-down/%d", i), fmt.Sprint(i))
	}
	if snapshotThreshold > 0 {
		c.Cut(f)
		fh.Start()
		fx := fh.XS()
		for i := range 20 {
			p := fmt.Sprintf("/test/restart/before/%d", i)
			if err := readIs(fx, p, want[p]); err != nil {
				t.Errorf("%s restarted alone, from its snapshot: %v", fh.Name, err)
			}
		}
		c.Heal(f)
	} else {
		fh.Start()
	}
	c.Leader(ctx)
	checkAcked(t, c, []int{f}, want)
	return want
}

// appliedIndex reads the host's last applied directory index from its
// metrics.
func appliedIndex(t *testing.T, h *Host) uint64 {
	t.Helper()
	resp, err := h.API.HTTP.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var v uint64
		if _, err := fmt.Sscanf(line, "shi_directory_applied_index %d", &v); err == nil {
			return v
		}
	}
	t.Fatalf("%s: no shi_directory_applied_index in /metrics", h.Name)
	return 0
}

// latestSnapshot returns the index of the newest complete snapshot in the
// host's data dir (Raft's file snapshot store: snapshots/<id>/meta.json).
func latestSnapshot(h *Host) (uint64, bool) {
	metas, _ := filepath.Glob(filepath.Join(h.DataDir, "raft", "snapshots", "*", "meta.json"))
	// Snapshots being written are in "<id>.tmp" until complete.
	metas = slices.DeleteFunc(metas, func(m string) bool { return strings.HasSuffix(filepath.Dir(m), ".tmp") })
	var best uint64
	found := false
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil && meta.Index >= best {
			best, found = meta.Index, true
		}
	}
	return best, found
}

// testFreeze: the leader is frozen (SIGSTOP); the others elect another,
// see it failed and go on writing; thawed, it rejoins and catches up.
func testFreeze(t *testing.T, c *Cluster) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := len(c.Hosts())
	l := c.Leader(ctx)
	lh := c.Host(l)
	var ws []*writer
	for _, i := range others(n, l) {
		ws = append(ws, startWriter(c.Host(i), "/test/freeze/"+c.Host(i).Name))
	}
	waitAcks(t, ws, time.Time{}, 3)
	frozen := time.Now()
	lh.Freeze()
	waitAcks(t, ws, frozen, 5)
	obs := c.Host(others(n, l)[0])
	eventually(t, 15*time.Second, obs.Name+" seeing "+lh.Name+" failed", func() error {
		s, err := obs.StateOf(ctx, lh)
		if err == nil && s != "failed" {
			err = fmt.Errorf("state %q", s)
		}
		return err
	})
	t.Logf("%s frozen: seen failed after %v", lh.Name, time.Since(frozen).Round(time.Millisecond))
	lh.Thaw()
	want := map[string]string{}
	for _, w := range ws {
		maps.Copy(want, acked(w.Stop()))
	}
	c.Leader(ctx)
	checkAcked(t, c, []int{l}, want)
	return want
}
