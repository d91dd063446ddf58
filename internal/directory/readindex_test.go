package directory

import (
	"context"
	"testing"
	"time"
)

// A read index covers every change committed, not only those the leader
// has applied: a follower may apply an entry before the leader does, and
// a linearizable read there must not be followed by an older answer on
// the leader (TestLinearizable caught it once, a stale read on a leader
// whose FSM lagged). Here the leader's FSM is held while an entry commits.
func TestReadIndexCoversCommittedNotApplied(t *testing.T) {
	n, r := startLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first, _, err := n.Apply(ctx, write("/a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock() // the FSM stalls on the next entry
	held := true
	defer func() {
		if held {
			r.mu.Unlock()
		}
	}()
	done := make(chan error, 1)
	go func() { _, _, err := n.Apply(ctx, write("/b", "2")); done <- err }()
	for n.r.CommitIndex() <= first {
		if ctx.Err() != nil {
			t.Fatal("the second entry never committed")
		}
		time.Sleep(time.Millisecond)
	}
	idx, err := n.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Unlock()
	held = false
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if idx <= first {
		t.Fatalf("read index %d: the entry committed after %d is not covered", idx, first)
	}
	if err := r.WaitApplied(ctx, idx); err != nil {
		t.Fatalf("read index %d never applied (replica at %d)", idx, r.Applied())
	}
}
