package clustertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"shi/guest/xs"
)

// TestConsistentReadsAfterLeaderChange: with -consistent-reads, reads
// must work once a new leader is elected, even when nobody writes.
//
// The read index a leader hands out is Raft's commit index, which after an
// election is the index of the new leader's no-op entry. That entry never
// reaches the FSM (hashicorp/raft applies only commands), so no replica's
// applied index reaches it and every read waits for it until it fails
// with EAGAIN — until some write happens to push the applied index past it.
func TestConsistentReadsAfterLeaderChange(t *testing.T) {
	c := Start(t, Options{Hosts: 3, ConsistentReads: true, CommitTimeout: commitTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := c.Leader(ctx)
	c.Host(l).Kill()
	rest := others(3, l)
	nl, err := c.WaitMembers(ctx, rest)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s killed, %s leads", c.Host(l).Name, c.Host(nl).Name)
	for _, i := range rest {
		x := c.Host(i).XS()
		start := time.Now()
		err := Within(x, opTimeout, func() error { return readIs(x, "/local/domain/0/name", "Domain-0") })
		if err != nil {
			t.Errorf("%s (%s) after the election, no writes since: %v after %v", c.Host(i).Name,
				map[bool]string{true: "the new leader", false: "a follower"}[i == nl], err, time.Since(start).Round(time.Millisecond))
		}
	}
}

// TestConsistentReadsNotStale: with -consistent-reads, a read that starts
// after a write was acknowledged must see it, also when the leader that
// acknowledged it dies at once.
//
// A new leader's commit index can trail what the old leader committed and
// acknowledged until the new leader commits an entry of its own term (Raft
// §6.4, §8). A read index taken from it in that window is too low, and a
// replica that has applied up to it answers with the old value. Delays of
// 50 ms between hosts (fault hook) widen the window; the write is
// acknowledged, the leader killed within milliseconds, and readers on the
// followers keep reading.
func TestConsistentReadsNotStale(t *testing.T) {
	c := Start(t, Options{Hosts: 3, ConsistentReads: true, CommitTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.SetFaultsAll(ctx, Faults{DelayMs: 50})
	l := c.Leader(ctx)
	lx := c.Host(l).XS()
	const key = "/stale"
	if err := lx.Write(key, []byte("old")); err != nil {
		t.Fatal(err)
	}
	type read struct {
		call, ret time.Time
		host      string
		v         string
		err       error
	}
	var (
		mu    sync.Mutex
		reads []read
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, f := range others(3, l) {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x, err := xs.Open(c.Host(f).Socket)
				if err != nil {
					return
				}
				defer x.Close()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r := read{call: time.Now(), host: c.Host(f).Name}
					var v []byte
					r.err = Within(x, opTimeout, func() (err error) { v, err = x.Read(key); return err })
					r.v, r.ret = string(v), time.Now()
					mu.Lock()
					reads = append(reads, r)
					mu.Unlock()
					if r.err == ErrTimeout {
						return
					}
				}
			}()
		}
	}
	// Let the readers get going, then write and kill the leader at once.
	eventually(t, 10*time.Second, "readers reading", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(reads) < 16 {
			return fmt.Errorf("%d reads", len(reads))
		}
		return nil
	})
	if err := lx.Write(key, []byte("new")); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	c.Host(l).Kill()
	t.Logf("%s acknowledged the write and was killed %v later", c.Host(l).Name, time.Since(acked).Round(time.Microsecond))
	if _, err := c.WaitMembers(ctx, others(3, l)); err != nil {
		t.Fatal(err)
	}
	// Go on until every reader has read once more after the election.
	elected := time.Now()
	eventually(t, 20*time.Second, "a read after the election on every reader", func() error {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range reads {
			if r.call.After(elected) {
				n++
			}
		}
		if n < 16 {
			return fmt.Errorf("%d reads", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	stale, after := 0, 0
	for _, r := range reads {
		if !r.call.After(acked) || r.err != nil {
			continue
		}
		after++
		if r.v != "new" {
			if stale < 5 {
				t.Errorf("%s: read called %v after the write was acknowledged returned %q (after %v)",
					r.host, r.call.Sub(acked).Round(time.Millisecond), r.v, r.ret.Sub(r.call).Round(time.Millisecond))
			}
			stale++
		}
	}
	t.Logf("%d successful reads started after the acknowledgement, %d stale", after, stale)
}
