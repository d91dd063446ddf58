package vchan

import (
	"testing"
	"time"
)

// A Read and a Write share the event channel. When the writer has looked
// at the ring and the reader's wait then takes the event the writer needs
// and ends, the writer must not sleep on the reader's next wait: it looks
// again. (Seen across hosts under load: a writer slept on a ring its own
// copy showed empty, while the reader slept on the event channel.)
func TestWaitAfterAWakeItDidNotSee(t *testing.T) {
	c := &Conn{woke: make(chan struct{})}
	seen := c.wakes() // the writer, before it looks at the ring

	// Meanwhile the reader's wait takes the event, ends, and the reader
	// waits again.
	c.mu.Lock()
	close(c.woke)
	c.woke = make(chan struct{})
	c.leading = true
	c.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- c.wait(writing, seen) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer slept through a wake that came after it looked at the ring")
	}

	// Without a wake since, it waits for the leader's wait to end.
	seen = c.wakes()
	go func() { done <- c.wait(writing, seen) }()
	select {
	case <-done:
		t.Fatal("the writer returned with no wake")
	case <-time.After(50 * time.Millisecond):
	}
	c.mu.Lock()
	close(c.woke)
	c.woke = make(chan struct{})
	c.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
