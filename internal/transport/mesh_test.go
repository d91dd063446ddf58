package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checker is a Handle that expects gen(0), gen(1), ... from one host, in
// order and intact.
type checker struct {
	from string
	mu   sync.Mutex
	next int
	err  error
}

func (c *checker) handle(from string, m Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if want := gen(c.next); from != c.from || !sameMsg(m, want) {
		c.err = fmt.Errorf("message %d from %q: got %+v, want %+v", c.next, from, m, want)
		return
	}
	c.next++
}

func (c *checker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

func (c *checker) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatal(c.err)
	}
}

// TestSendInOrder: 100k messages of every shape from A arrive at B in
// order and intact, sharing writes.
func TestSendInOrder(t *testing.T) {
	tn := newTestNet(t)
	chk := &checker{from: "A"}
	a := tn.start("A", "", nil)
	b := tn.start("B", "", func(c *Config, _ *tunables) { c.Handle = chk.handle })

	const n = 100_000
	for i := range n {
		m := gen(i)
		if err := a.Send("B", &m); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		// Send copies: scribbling on the message afterwards changes nothing.
		clear(m.Data)
		m.ID = 0
	}
	waitFor(t, "all messages", func() bool { chk.check(t); return chk.count() == n })

	as, bs := a.Stats(), b.Stats()
	t.Logf("A: %+v", as)
	if as.FramesSent != n || bs.FramesReceived != n || as.BytesSent != bs.BytesReceived {
		t.Fatalf("A sent %d frames (%d bytes), B received %d (%d bytes)", as.FramesSent, as.BytesSent, bs.FramesReceived, bs.BytesReceived)
	}
	if as.Dials != 1 || as.Reconnects != 0 || as.QueueDrops != 0 {
		t.Fatalf("A: %d dials, %d reconnects, %d drops", as.Dials, as.Reconnects, as.QueueDrops)
	}
	// Frames queued while a write is in progress go out together.
	if as.Writes > n/10 {
		t.Fatalf("%d frames took %d writes; want batching", n, as.Writes)
	}
}

// TestBurstIsOneWrite: frames queued while the host cannot be reached go
// out in one vectored write once it can.
func TestBurstIsOneWrite(t *testing.T) {
	tn := newTestNet(t)
	chk := &checker{from: "A"}
	a := tn.start("A", "", nil)
	tn.start("B", "", func(c *Config, _ *tunables) { c.Handle = chk.handle })
	tn.setResolvable("B", false)
	const n = 10_000
	for i := range n {
		m := gen(i)
		if err := a.Send("B", &m); err != nil {
			t.Fatal(err)
		}
	}
	tn.setResolvable("B", true)
	waitFor(t, "all messages", func() bool { chk.check(t); return chk.count() == n })
	if s := a.Stats(); s.Writes != 1 || s.FramesSent != n {
		t.Fatalf("%d frames in %d writes, want 1", s.FramesSent, s.Writes)
	}
}

// TestRepliesBothWays: A and B send each other requests at the same time
// and answer each other's from Handle.
func TestRepliesBothWays(t *testing.T) {
	tn := newTestNet(t)
	const n = 20_000
	type side struct {
		node    *node
		answers atomic.Int64
		bad     atomic.Value
	}
	var a, b side
	handle := func(self *side, other string) func(string, Msg) {
		return func(from string, m Msg) {
			switch m.Kind {
			case KindStatusReq:
				resp := Msg{Kind: KindStatusResp, ID: m.ID, Arg: [4]uint32{m.Arg[0] * 2}}
				if err := self.node.Send(from, &resp); err != nil {
					self.bad.Store(err.Error())
				}
			case KindStatusResp:
				want := self.answers.Load() + 1
				if m.ID != uint64(want) || m.Arg[0] != uint32(2*want) || from != other {
					self.bad.Store(fmt.Sprintf("answer %d from %s: %+v", want, from, m))
				}
				self.answers.Add(1)
			}
		}
	}
	a.node = tn.start("A", "", func(c *Config, _ *tunables) { c.Handle = handle(&a, "B") })
	b.node = tn.start("B", "", func(c *Config, _ *tunables) { c.Handle = handle(&b, "A") })

	var wg sync.WaitGroup
	for _, s := range []struct {
		from *side
		to   string
	}{{&a, "B"}, {&b, "A"}} {
		wg.Go(func() {
			for i := 1; i <= n; i++ {
				req := Msg{Kind: KindStatusReq, ID: uint64(i), Arg: [4]uint32{uint32(i)}}
				if err := s.from.node.Send(s.to, &req); err != nil {
					s.from.bad.Store(err.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "all answers", func() bool {
		for _, s := range []*side{&a, &b} {
			if bad := s.bad.Load(); bad != nil {
				t.Fatal(bad)
			}
		}
		return a.answers.Load() == n && b.answers.Load() == n
	})
}

// TestPeerRestart: B goes away and comes back on the same address; A
// notices the old connection end and what it sends next arrives.
func TestPeerRestart(t *testing.T) {
	tn := newTestNet(t)
	got := make(chan Msg, 10)
	a := tn.start("A", "", nil)
	b := tn.start("B", "", func(c *Config, _ *tunables) { c.Handle = func(_ string, m Msg) { got <- m } })
	m := Msg{Kind: KindSend, ID: 1}
	if err := a.Send("B", &m); err != nil {
		t.Fatal(err)
	}
	<-got
	addr := b.Addr().String()
	b.Close()
	waitFor(t, "A to see B's connection end", func() bool { return !a.connected("B") })

	chk := &checker{from: "A"}
	tn.start("B", addr, func(c *Config, _ *tunables) { c.Handle = chk.handle })
	const n = 1000
	for i := range n {
		m := gen(i)
		if err := a.Send("B", &m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "messages to the new B", func() bool { chk.check(t); return chk.count() == n })
	if s := a.Stats(); s.Reconnects != 1 || s.QueueDrops != 0 {
		t.Fatalf("A: %d reconnects, %d drops; want 1, 0", s.Reconnects, s.QueueDrops)
	}
}

// TestForgetDropsQueue: what was queued for a host before Forget is never
// sent; what is sent after goes over a fresh connection.
func TestForgetDropsQueue(t *testing.T) {
	tn := newTestNet(t)
	var got []uint64
	var mu sync.Mutex
	a := tn.start("A", "", nil)
	tn.start("B", "", func(c *Config, _ *tunables) {
		c.Handle = func(_ string, m Msg) { mu.Lock(); got = append(got, m.ID); mu.Unlock() }
	})
	tn.setResolvable("B", false)
	for i := range 100 {
		if err := a.Send("B", &Msg{Kind: KindSend, ID: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	a.Forget("B")
	if d := a.Stats().QueueDrops; d != 100 {
		t.Fatalf("Forget dropped %d frames, want 100", d)
	}
	tn.setResolvable("B", true)
	if err := a.Send("B", &Msg{Kind: KindSend, ID: 1000}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message sent after Forget", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
	// Anything still queued would have followed it on the same connection.
	if err := a.Send("B", &Msg{Kind: KindSend, ID: 1001}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second message", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != 1000 || got[1] != 1001 {
		t.Fatalf("B got %v, want [1000 1001]", got)
	}
}

// TestForgetClosesConnections: Forget closes a host's connections both
// ways; the other side reconnects when it next sends.
func TestForgetClosesConnections(t *testing.T) {
	tn := newTestNet(t)
	var fromA atomic.Int64
	a := tn.start("A", "", nil)
	b := tn.start("B", "", func(c *Config, _ *tunables) { c.Handle = func(string, Msg) { fromA.Add(1) } })
	send := func() {
		t.Helper()
		if err := a.Send("B", &Msg{Kind: KindSend}); err != nil {
			t.Fatal(err)
		}
	}
	send()
	waitFor(t, "first message", func() bool { return fromA.Load() == 1 })

	b.Forget("A") // B's inbound connection from A
	waitFor(t, "A to see its connection closed", func() bool { return !a.connected("B") })
	send()
	waitFor(t, "message after B forgot A", func() bool { return fromA.Load() == 2 })
	if r := a.Stats().Reconnects; r != 1 {
		t.Fatalf("A reconnected %d times, want 1", r)
	}

	a.Forget("B") // A's outbound connection to B
	waitFor(t, "B to see A's connection closed", func() bool { return b.inboundFrom("A") == 0 })
	send()
	waitFor(t, "message after A forgot B", func() bool { return fromA.Load() == 3 })
}

// TestUnresolvableHost: Send to a host with no address queues without
// blocking; the writer keeps trying, and gives up after giveUp, dropping
// the frames. A full queue refuses with ErrQueueFull.
func TestUnresolvableHost(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("A", "", func(_ *Config, tun *tunables) { tun.giveUp = 200 * time.Millisecond })
	start := time.Now()
	for range 1000 {
		if err := a.Send("ghost", &Msg{Kind: KindSend}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("1000 Sends to an unresolvable host took %v", d)
	}
	waitFor(t, "the queue to be dropped", func() bool { return a.Stats().QueueDrops == 1000 })
	if !a.log.contains("dropped frames for an unreachable host", "peer=ghost", "frames=1000") {
		t.Fatal("no log line for the dropped frames")
	}
	if s := a.Stats(); s.Dials != 0 || s.FramesSent != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestQueueFull(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("A", "", nil)
	m := Msg{Kind: KindMapResp, Data: make([]byte, MaxData)}
	sent := 0
	var err error
	for sent < 10_000 {
		if err = a.Send("ghost", &m); err != nil {
			break
		}
		sent++
	}
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after %d sends: %v, want ErrQueueFull", sent, err)
	}
	if want := defaultTunables.maxQueue / FrameSize(&m); sent != want {
		t.Fatalf("queued %d frames, want %d", sent, want)
	}
	// A small frame that still fits is taken.
	if err := a.Send("ghost", &Msg{Kind: KindSend}); err != nil {
		t.Fatal(err)
	}
	a.Forget("ghost")
	if d := a.Stats().QueueDrops; d != uint64(sent)+2 { // the refused one, then Forget's
		t.Fatalf("%d drops, want %d", d, sent+2)
	}
}

func TestSendErrors(t *testing.T) {
	tn := newTestNet(t)
	a := tn.start("A", "", nil)
	for _, tc := range []struct {
		host string
		m    Msg
	}{
		{"", Msg{}},
		{"A", Msg{}},
		{"B", Msg{Data: make([]byte, MaxData+1)}},
	} {
		if err := a.Send(tc.host, &tc.m); err == nil {
			t.Errorf("Send(%q, %d bytes) succeeded", tc.host, len(tc.m.Data))
		}
	}
	if err := a.Send("B", &Msg{Data: make([]byte, MaxData+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	a.Close()
	if err := a.Send("B", &Msg{}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if _, err := a.DialLink(ctxTimeout(t, time.Second), "B", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("DialLink after Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ok := Config{Name: "A", Listener: ln, Resolve: func(string) (string, bool) { return "", false }, Handle: func(string, Msg) {}}
	for name, edit := range map[string]func(*Config){
		"no name":     func(c *Config) { c.Name = "" },
		"long name":   func(c *Config) { c.Name = string(make([]byte, MaxName+1)) },
		"no listener": func(c *Config) { c.Listener = nil },
		"no resolve":  func(c *Config) { c.Resolve = nil },
		"no handle":   func(c *Config) { c.Handle = nil },
	} {
		c := ok
		edit(&c)
		if m, err := New(c); err == nil {
			m.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestKeys: meshes with the same key talk, keyless meshes talk, and a
// mesh with another key is refused on both ends, for control and links.
func TestKeys(t *testing.T) {
	tn := newTestNet(t)
	var got sync.Map
	handle := func(self string) func(string, Msg) {
		return func(from string, m Msg) { got.Store(self+"<-"+from, true) }
	}
	accept := func(string, []byte, net.Conn) error { return nil }
	start := func(name string, key []byte) *node {
		return tn.start(name, "", func(c *Config, _ *tunables) { c.Key, c.Handle, c.Link = key, handle(name), accept })
	}
	k1, k2 := []byte("the cluster key"), []byte("another key")
	a, _, c := start("A", k1), start("B", k1), start("C", k2)
	d, _ := start("D", nil), start("E", nil)

	if err := a.Send("B", &Msg{Kind: KindSend}); err != nil {
		t.Fatal(err)
	}
	if err := d.Send("E", &Msg{Kind: KindSend}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "keyed and keyless messages", func() bool {
		_, ab := got.Load("B<-A")
		_, de := got.Load("E<-D")
		return ab && de
	})

	// Control: C's frames to A never arrive, and both ends say why.
	if err := c.Send("A", &Msg{Kind: KindSend}); err != nil {
		t.Fatal(err)
	}
	// The counters move before the log lines are written: wait for both.
	waitFor(t, "both ends to count and log the failure", func() bool {
		return a.Stats().AuthFailures > 0 && c.Stats().AuthFailures > 0 &&
			a.log.contains("authentication failed", "peer=C") &&
			c.log.contains("cannot reach host", "peer=A", "authentication failed")
	})
	if _, ok := got.Load("A<-C"); ok {
		t.Fatal("A handled a message from a host with another key")
	}

	// Links, both directions: refused with ErrAuth and a clear message.
	for _, p := range []struct {
		from *node
		to   string
	}{{c, "A"}, {a, "C"}, {d, "A"}} {
		conn, err := p.from.DialLink(ctxTimeout(t, 5*time.Second), p.to, []byte("hi"))
		if err == nil {
			conn.Close()
			t.Fatalf("%s -> %s: link accepted", p.from.cfg.Name, p.to)
		}
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("%s -> %s: %v, want ErrAuth", p.from.cfg.Name, p.to, err)
		}
		t.Logf("%s -> %s: %v", p.from.cfg.Name, p.to, err)
	}
	// But links with the right key work.
	conn, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// rawConn dials m and, if name is not empty, runs a keyless control
// handshake as name.
func rawConn(t *testing.T, m *node, name string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if name != "" {
		if err := dialHandshake(c, nil, connControl, name); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// closedByPeer waits for c's peer to close it.
func closedByPeer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after reading %d bytes", n)
	}
}

// TestMalformedInput: garbage, a hostile length and a truncated frame each
// close their own connection, with a log line naming the peer; the
// acceptor keeps serving everyone else.
func TestMalformedInput(t *testing.T) {
	tn := newTestNet(t)
	chk := &checker{from: "A"}
	a := tn.start("A", "", nil)
	b := tn.start("B", "", func(c *Config, _ *tunables) {
		c.Handle = func(from string, m Msg) {
			if from == "A" {
				chk.handle(from, m)
			}
		}
	})
	sent := 0
	sendSome := func() {
		t.Helper()
		for range 100 {
			m := gen(sent)
			if err := a.Send("B", &m); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		waitFor(t, "A's messages", func() bool { chk.check(t); return chk.count() == sent })
	}
	sendSome()

	var huge [4]byte
	huge[0], huge[1], huge[2], huge[3] = 0xff, 0xff, 0xff, 0x7f
	good := encodeAll(Msg{Kind: KindSend})
	for i, tc := range []struct {
		name, peer string // peer "" skips the handshake
		send       []byte
		log        string
	}{
		{"garbage preface", "", []byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n"), "malformed handshake"},
		{"hostile length", "evil1", huge[:], "malformed frame"},
		{"short length", "evil2", []byte{3, 0, 0, 0, 1, 2, 3}, "malformed frame"},
		{"truncated frame", "evil3", good[:len(good)-5], "malformed frame"},
	} {
		c := rawConn(t, b, tc.peer)
		c.Write(tc.send)
		if tc.name == "truncated frame" {
			c.(*net.TCPConn).CloseWrite()
		}
		closedByPeer(t, c)
		waitFor(t, tc.name+" counted", func() bool { return b.Stats().Malformed == uint64(i+1) })
		who := "peer=" + tc.peer
		if tc.peer == "" {
			who = "addr=" + c.LocalAddr().String()
		}
		if !b.log.contains(tc.log, who) {
			t.Errorf("%s: no log line %q naming %s", tc.name, tc.log, who)
		}
		sendSome()
	}
	if s := b.Stats(); s.FramesReceived != uint64(sent) {
		t.Fatalf("B received %d frames, want %d", s.FramesReceived, sent)
	}
}

// TestNewerConnectionWins: a second control connection from the same name
// replaces the first, whose later frames are not delivered.
func TestNewerConnectionWins(t *testing.T) {
	tn := newTestNet(t)
	var got []uint64
	var mu sync.Mutex
	b := tn.start("B", "", func(c *Config, _ *tunables) {
		c.Handle = func(_ string, m Msg) { mu.Lock(); got = append(got, m.ID); mu.Unlock() }
	})
	old := rawConn(t, b, "X")
	old.Write(encodeAll(Msg{ID: 1}))
	waitFor(t, "the first frame", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	newer := rawConn(t, b, "X")
	closedByPeer(t, old)
	newer.Write(encodeAll(Msg{ID: 2}))
	waitFor(t, "the second frame", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	if got[1] != 2 || b.inboundFrom("X") != 1 {
		t.Fatalf("got %v, %d connections", got, b.inboundFrom("X"))
	}
}
