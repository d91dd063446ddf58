package membership

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"shi/internal/faultnet"
)

// testLogger logs to t at Warn and above, and stops when the test ends
// (memberlist's goroutines may log a little after Shutdown).
func testLogger(t *testing.T, name string) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func testMeta(i int) Meta {
	return Meta{
		APIURL:   fmt.Sprintf("http://127.0.0.1:%d", 4000+i),
		RaftAddr: fmt.Sprintf("127.0.0.1:%d", 5000+i),
		CPUs:     2 + i,
		MemTotal: 8 << 30,
		MemFree:  4 << 30,
		Version:  "test",
	}
}

// node is one in-process member with its own faults and an event log.
type node struct {
	*Membership
	faults *faultnet.Faults

	mu     sync.Mutex
	events []Event
}

func startNode(t *testing.T, name string, mod func(*Config)) *node {
	t.Helper()
	cfg := DefaultTestConfig()
	cfg.Name = name
	cfg.Logger = testLogger(t, name)
	cfg.Faults = faultnet.New()
	cfg.Meta = testMeta(len(name))
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{Membership: m, faults: cfg.Faults}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range m.Events() {
			n.mu.Lock()
			n.events = append(n.events, ev)
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		m.Shutdown()
		<-done // Events is closed by Shutdown
	})
	return n
}

// saw reports whether n received an event of type typ about name.
func (n *node) saw(typ EventType, name string) (Event, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range n.events {
		if ev.Type == typ && ev.Member.Name == name {
			return ev, true
		}
	}
	return Event{}, false
}

// member returns n's view of name.
func (n *node) member(name string) Member {
	for _, m := range n.Members() {
		if m.Name == name {
			return m
		}
	}
	return Member{}
}

func (n *node) alive() []string {
	var out []string
	for _, m := range n.Members() {
		if m.State == StateAlive {
			out = append(out, m.Name)
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func startCluster(t *testing.T, names ...string) []*node {
	t.Helper()
	var nodes []*node
	for _, name := range names {
		n := startNode(t, name, nil)
		if len(nodes) > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	all := strings.Join(names, ",")
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.LocalName()+" to see "+all, func() bool {
			return strings.Join(n.alive(), ",") == all
		})
	}
	return nodes
}

func TestJoinAndMeta(t *testing.T) {
	nodes := startCluster(t, "a", "bb", "ccc")
	for _, n := range nodes {
		for _, o := range nodes {
			m := n.member(o.LocalName())
			if m.Addr != o.Addr() || m.Meta != testMeta(len(o.LocalName())) {
				t.Fatalf("%s sees %s as %+v", n.LocalName(), o.LocalName(), m)
			}
		}
		if _, ok := n.saw(EventJoin, "ccc"); !ok {
			t.Fatalf("%s got no join event for ccc", n.LocalName())
		}
	}

	meta := testMeta(1)
	meta.MemFree = 1 << 30
	if err := nodes[0].UpdateMeta(meta, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		waitFor(t, 5*time.Second, n.LocalName()+" to see a's new free memory", func() bool {
			ev, ok := n.saw(EventUpdate, "a")
			return ok && ev.Member.Meta == meta && n.member("a").Meta == meta
		})
	}
	bad := meta
	bad.MemFree = bad.MemTotal + 1
	if err := nodes[0].UpdateMeta(bad, time.Second); err == nil {
		t.Fatal("UpdateMeta accepted free > total")
	}
}

func TestFailedAndLeft(t *testing.T) {
	nodes := startCluster(t, "a", "b", "c", "d")
	a := nodes[0]

	start := time.Now()
	nodes[3].Shutdown() // no goodbye: a failure
	for _, n := range nodes[:3] {
		waitFor(t, 10*time.Second, n.LocalName()+" to see d failed", func() bool {
			_, ok := n.saw(EventFailed, "d")
			return ok && n.member("d").State == StateFailed
		})
	}
	t.Logf("failure detected everywhere after %v (DefaultTestConfig)", time.Since(start))

	if err := nodes[2].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		waitFor(t, 5*time.Second, n.LocalName()+" to see c left", func() bool {
			_, ok := n.saw(EventLeft, "c")
			return ok && n.member("c").State == StateLeft
		})
		if _, ok := n.saw(EventFailed, "c"); ok {
			t.Fatalf("%s saw c fail, not leave", n.LocalName())
		}
	}
	if got := strings.Join(a.alive(), ","); got != "a,b" {
		t.Fatalf("a sees alive %s", got)
	}
}

func TestEncryption(t *testing.T) {
	key1 := bytes.Repeat([]byte{1}, 32)
	key2 := bytes.Repeat([]byte{2}, 16)
	a := startNode(t, "a", func(c *Config) { c.EncryptKey = key1 })
	b := startNode(t, "b", func(c *Config) { c.EncryptKey = key1 })
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("same key: %v", err)
	}
	waitFor(t, 5*time.Second, "a to see b", func() bool { return len(a.alive()) == 2 })

	c := startNode(t, "c", func(c *Config) { c.EncryptKey = key2 })
	if _, err := c.Join([]string{a.Addr()}); err == nil {
		t.Fatal("a host with another key joined")
	}
	d := startNode(t, "d", nil)
	if _, err := d.Join([]string{a.Addr()}); err == nil {
		t.Fatal("a host without a key joined")
	}
	e := startNode(t, "e", nil)
	if _, err := a.Join([]string{e.Addr()}); err == nil {
		t.Fatal("joined a host without a key")
	}
	for _, n := range []*node{c, d, e} {
		if got := n.alive(); len(got) != 1 {
			t.Fatalf("%s sees %v", n.LocalName(), got)
		}
	}
	if got := strings.Join(a.alive(), ","); got != "a,b" {
		t.Fatalf("a sees %s", got)
	}
}

// TestPartitionMerge cuts a 4-host cluster in two halves for longer than
// memberlist remembers dead members, then heals it: only the reconnect
// loop can bring the halves together again.
func TestPartitionMerge(t *testing.T) {
	nodes := startCluster(t, "a", "b", "c", "d")
	left, right := nodes[:2], nodes[2:]
	cut := func(from, to []*node) {
		for _, n := range from {
			for _, o := range to {
				n.faults.Block(o.Addr())
			}
		}
	}
	cut(left, right)
	cut(right, left)
	for _, n := range nodes {
		want := "a,b"
		if n.LocalName() >= "c" {
			want = "c,d"
		}
		waitFor(t, 10*time.Second, n.LocalName()+" to see only "+want, func() bool {
			return strings.Join(n.alive(), ",") == want
		})
	}
	// Stay apart until memberlist has forgotten the other half (it reaps
	// dead members GossipToTheDeadTime after they died, at its next
	// round); this wait is the length of the fault, not a poll.
	time.Sleep(DefaultTestConfig().GossipToTheDeadTime + time.Second)

	start := time.Now()
	for _, n := range nodes {
		n.faults.Reset()
	}
	for _, n := range nodes {
		waitFor(t, 15*time.Second, n.LocalName()+" to see all four again", func() bool {
			return strings.Join(n.alive(), ",") == "a,b,c,d"
		})
	}
	t.Logf("halves merged %v after the heal", time.Since(start))
	if _, ok := nodes[0].saw(EventFailed, "c"); !ok {
		t.Fatal("a never saw c fail")
	}
}

// TestRejoinAtNewAddress: a host that comes back under its name at another
// address is taken back, both when the cluster already saw it fail and
// when it restarts before anyone noticed.
func TestRejoinAtNewAddress(t *testing.T) {
	nodes := startCluster(t, "a", "b", "c")
	a, b := nodes[0], nodes[1]

	back := func(name, old string) *node {
		t.Helper()
		n := startNode(t, name, nil)
		if n.Addr() == old {
			t.Fatalf("%s came back at its old address %s", name, old)
		}
		if _, err := n.Join([]string{a.Addr()}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for _, o := range []*node{a, b} {
			waitFor(t, 15*time.Second, o.LocalName()+" to take "+name+" back at "+n.Addr(), func() bool {
				m := o.member(name)
				return m.State == StateAlive && m.Addr == n.Addr()
			})
		}
		waitFor(t, 5*time.Second, name+" to see a and b", func() bool { return len(n.alive()) == 3 })
		t.Logf("%s taken back at its new address after %v", name, time.Since(start))
		return n
	}

	// Seen failed first.
	old := nodes[2].Addr()
	nodes[2].Shutdown()
	waitFor(t, 10*time.Second, "a to see c failed", func() bool { return a.member("c").State == StateFailed })
	c2 := back("c", old)

	// Restarted before anyone noticed: memberlist refuses the new address
	// while the old entry is alive, then must take it once that fails.
	old = c2.Addr()
	c2.Shutdown()
	back("c", old)
}

// TestGossipWithDelayAndLoss: with faultnet delaying and dropping gossip,
// hosts still join and meta still spreads (through delayed datagrams and
// delayed streams).
func TestGossipWithDelayAndLoss(t *testing.T) {
	var nodes []*node
	for _, name := range []string{"a", "b", "c"} {
		n := startNode(t, name, nil)
		if err := n.faults.Set("delay=20ms jitter=5ms loss=0.1"); err != nil {
			t.Fatal(err)
		}
		if len(nodes) > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	meta := testMeta(1)
	meta.MemFree = 1
	if err := nodes[0].UpdateMeta(meta, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.LocalName()+" to see all three and a's meta", func() bool {
			return strings.Join(n.alive(), ",") == "a,b,c" && n.member("a").Meta == meta
		})
	}
}
