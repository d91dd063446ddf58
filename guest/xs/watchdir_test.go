package xs_test

import (
	"context"
	"slices"
	"testing"
	"time"
)

// WatchDir hands fn what the directory holds: nothing while it is absent,
// then each child once it is written.
func TestWatchDir(t *testing.T) {
	c, _ := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []string, 16)
	done := make(chan error, 1)
	go func() {
		done <- c.WatchDir(ctx, "/d", "tok", time.Hour, func(names []string, err error) {
			if err != nil {
				t.Errorf("listing: %v", err)
			}
			got <- slices.Clone(names)
		})
	}()
	if first := <-got; len(first) != 0 { // the watch's own first event, /d absent
		t.Fatalf("an absent directory listed %q", first)
	}
	if err := c.Write("/d/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(5 * time.Second); ; {
		select {
		case names := <-got:
			if slices.Equal(names, []string{"a"}) {
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("WatchDir after its context ended: %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatal("the child never listed")
		}
	}
}
