package hypervisor

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"shi/guest/gnttab"
	"shi/guest/vchan"
	"shi/guest/xs"
	"shi/guest/xs/xstest"
	"shi/internal/abi"
)

// vchanEnv is a cluster of hosts a and b with one fake XenStore: server
// domain 1 on a, client domain 2 on a (local) or b (remote).
type vchanEnv struct {
	c    *cluster
	xs   *xstest.Server
	srv  DomID
	cli  DomID
	path string
	// dead are ends whose domain the test removed: their process would
	// be gone, so nothing closes them (their waits never end).
	dead map[*vchan.Conn]bool
}

func newVchanEnv(t *testing.T, remote bool) *vchanEnv {
	e := &vchanEnv{c: newCluster(t, "a", "b"), xs: xstest.NewServer(), srv: 1, cli: 2, path: "/local/domain/1/data/vchan",
		dead: map[*vchan.Conn]bool{}}
	t.Cleanup(func() { e.xs.Close() })
	e.c.dom(t, "a", 1)
	if remote {
		e.c.dom(t, "b", 2)
	} else {
		e.c.dom(t, "a", 2)
	}
	return e
}

func (e *vchanEnv) xsClient(t *testing.T) *xs.Client {
	t.Helper()
	nc, err := e.xs.Pair()
	if err != nil {
		t.Fatal(err)
	}
	c := xs.New(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

// pair sets up a vchan with the given orders (0, 0: readMin and
// writeMin of 0, vchan-socket-proxy's choice).
func (e *vchanEnv) pair(t *testing.T, left, right uint16) (srv, cli *vchan.Conn) {
	t.Helper()
	scfg := vchan.Config{Hypervisor: e.c.conns[e.srv], XenStore: e.xsClient(t), LeftOrder: left, RightOrder: right}
	srv, err := scfg.Listen(e.cli, e.path)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := vchan.Config{Hypervisor: e.c.conns[e.cli], XenStore: e.xsClient(t)}
	cli, err = ccfg.Dial(e.srv, e.path)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range []*vchan.Conn{cli, srv} {
			if !e.dead[c] {
				c.Close()
			}
		}
	})
	if l, r := cli.Orders(); left != 0 && (l != left || r != right) {
		t.Fatalf("client sees orders %d/%d, server made %d/%d", l, r, left, right)
	}
	return srv, cli
}

// stream writes total pseudo-random bytes in random chunks and returns
// their checksum.
func stream(w io.Writer, seed uint64, total int) ([32]byte, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, 200<<10)
	for total > 0 {
		n := min(total, 1+rng.IntN(len(buf)))
		for i := range n {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return [32]byte{}, err
		}
		total -= n
	}
	return [32]byte(h.Sum(nil)), nil
}

// drain reads exactly total bytes in random chunks and returns their
// checksum.
func drain(r io.Reader, seed uint64, total int) ([32]byte, error) {
	rng := rand.New(rand.NewPCG(seed, 2))
	h := sha256.New()
	buf := make([]byte, 150<<10)
	for got := 0; got < total; {
		n, err := r.Read(buf[:min(total-got, 1+rng.IntN(len(buf)))])
		h.Write(buf[:n])
		got += n
		if err != nil {
			return [32]byte{}, fmt.Errorf("after %d bytes of %d: %w", got, total, err)
		}
	}
	return [32]byte(h.Sum(nil)), nil
}

// duplex moves total bytes each way at once and compares checksums.
func duplex(t *testing.T, a, b io.ReadWriter, total int) {
	t.Helper()
	type res struct {
		what string
		sum  [32]byte
		err  error
	}
	ch := make(chan res, 4)
	for i, rw := range []io.ReadWriter{a, b} {
		go func() { s, err := stream(rw, uint64(i), total); ch <- res{fmt.Sprintf("write %d", i), s, err} }()
		go func() { s, err := drain(rw, uint64(1-i), total); ch <- res{fmt.Sprintf("read %d", 1-i), s, err} }()
	}
	sums := map[string][32]byte{}
	for range 4 {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s: %v", r.what, r.err)
			}
			sums[r.what] = r.sum
		case <-time.After(60 * time.Second):
			t.Fatal("stalled")
		}
	}
	for i := range 2 {
		if w, r := sums[fmt.Sprintf("write %d", i)], sums[fmt.Sprintf("read %d", i)]; w != r {
			t.Fatalf("stream %d: sent %x, received %x", i, w[:8], r[:8])
		}
	}
}

// vchanOrders are the ring layouts every pair of tests runs: those
// libxenvchan's server picks (10/11, 11/10, 11/paged, paged/11, both
// paged) and the in-page-beside-paged ones only its client accepts.
var vchanOrders = [][2]uint16{
	{10, 11}, {11, 10}, {10, 12}, {12, 11}, {11, 13}, {12, 12}, {16, 16}, {20, 20}, {12, 20}, {19, 10}, {20, 11}, {13, 10},
}

// TestVchanRingSizes: a checksummed stream each way at once through every
// layout, two domains of one host and of two hosts.
func TestVchanRingSizes(t *testing.T) {
	for _, where := range []string{"local", "remote"} {
		for _, o := range vchanOrders {
			t.Run(fmt.Sprintf("%s %d-%d", where, o[0], o[1]), func(t *testing.T) {
				e := newVchanEnv(t, where == "remote")
				srv, cli := e.pair(t, o[0], o[1])
				total := min(max(256<<10, 3<<max(o[0], o[1])), 4<<20)
				duplex(t, srv, cli, total)
			})
		}
	}
}

// TestVchanDefaultRings: Listen with read_min/write_min picks init.c's
// orders, and the client sees them.
func TestVchanDefaultRings(t *testing.T) {
	e := newVchanEnv(t, true)
	for i, mins := range [][2]int{{0, 0}, {2048, 0}, {5000, 1 << 20}} {
		path := e.path + strconv.Itoa(i)
		scfg := vchan.Config{Hypervisor: e.c.conns[1], XenStore: e.xsClient(t), ReadMin: mins[0], WriteMin: mins[1]}
		srv, err := scfg.Listen(2, path)
		if err != nil {
			t.Fatal(err)
		}
		ccfg := vchan.Config{Hypervisor: e.c.conns[2], XenStore: e.xsClient(t)}
		cli, err := ccfg.Dial(1, path)
		if err != nil {
			t.Fatal(err)
		}
		wl, wr, _ := vchan.Orders(mins[0], mins[1])
		if l, r := cli.Orders(); l != wl || r != wr {
			t.Errorf("mins %v: client sees %d/%d, want %d/%d", mins, l, r, wl, wr)
		}
		duplex(t, srv, cli, 100<<10)
		cli.Close()
		srv.Close()
	}
}

// TestVchanXenStore: the server's nodes, their permissions and the
// transaction, as init_xs_srv makes them; a conflicting commit is
// retried; Close removes the directory.
func TestVchanXenStore(t *testing.T) {
	e := newVchanEnv(t, false)
	e.xs.FailCommits(2)
	scfg := vchan.Config{Hypervisor: e.c.conns[1], XenStore: e.xsClient(t)}
	srv, err := scfg.Listen(2, e.path)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, m := range e.xs.Requests() {
		name := abi.XSTypeName(m.Type)
		if m.Type == abi.XS_TRANSACTION_START || m.Type == abi.XS_TRANSACTION_END {
			ops = append(ops, name)
			continue
		}
		args := bytes.Split(bytes.TrimSuffix(m.Payload, []byte{0}), []byte{0})
		ops = append(ops, fmt.Sprintf("%s %s tx=%v", name, bytes.Join(args, []byte(" ")), m.TxID != 0))
	}
	checker := xs.New(mustPair(t, e.xs))
	defer checker.Close()
	ref, _ := checker.Read(e.path + "/ring-ref")
	port, _ := checker.Read(e.path + "/event-channel")
	once := []string{
		"XS_TRANSACTION_START",
		"XS_WRITE " + e.path + "/ring-ref " + string(ref) + " tx=true",
		"XS_SET_PERMS " + e.path + "/ring-ref n1 r2 tx=true",
		"XS_WRITE " + e.path + "/event-channel " + string(port) + " tx=true",
		"XS_SET_PERMS " + e.path + "/event-channel n1 r2 tx=true",
		"XS_TRANSACTION_END",
	}
	var want []string
	for range 3 { // two conflicts, then the commit
		want = append(want, once...)
	}
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Fatalf("requests:\n%q\nwant\n%q", ops, want)
	}
	for _, n := range []string{"/ring-ref", "/event-channel"} {
		p, err := checker.GetPerms(e.path + n)
		if err != nil || fmt.Sprint(p) != "[n1 r2]" {
			t.Errorf("%s perms %v %v", n, p, err)
		}
	}
	if r, _ := strconv.Atoi(string(ref)); r == 0 {
		t.Errorf("ring-ref %q", ref)
	}
	if p, _ := strconv.Atoi(string(port)); p == 0 {
		t.Errorf("event-channel %q", port)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := checker.Read(e.path); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("%s after Close: %v", e.path, err)
	}
	// A client that comes too late finds nothing.
	ccfg := vchan.Config{Hypervisor: e.c.conns[2], XenStore: e.xsClient(t)}
	if _, err := ccfg.Dial(1, e.path); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("dial after the server closed: %v", err)
	}
}

func mustPair(t *testing.T, s *xstest.Server) net.Conn {
	nc, err := s.Pair()
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// TestVchanBadPage: a client refuses a control page libxenvchan's
// client would refuse, and one whose indices or live bytes are wrong,
// with a clear error; it leaves nothing mapped or bound.
func TestVchanBadPage(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(p []byte)
	}{
		{"equal in-page orders", func(p []byte) { p[16], p[18] = 11, 11 }},
		{"order 21", func(p []byte) { p[16] = 21 }},
		{"grants into a ring", func(p []byte) { p[16], p[18] = 20, 10 }},
		{"corrupt index", func(p []byte) { p[13] = 0xff }},
		{"server not live", func(p []byte) { p[21] = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newVchanEnv(t, tc.name == "corrupt index")
			scfg := vchan.Config{Hypervisor: e.c.conns[1], XenStore: e.xsClient(t)}
			srv, err := scfg.Listen(2, e.path)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			// The server's page, found through its own grant: map it as
			// dom1 cannot, so forge it via a copy through the grant.
			checker := xs.New(mustPair(t, e.xs))
			defer checker.Close()
			ref, _ := checker.Read(e.path + "/ring-ref")
			r, _ := strconv.Atoi(string(ref))
			g2 := gnttab.Open(e.c.conns[2])
			page := make([]byte, abi.PAGE_SIZE)
			if err := g2.CopyFrom(page, 1, gnttab.Ref(r), 0); err != nil {
				t.Fatal(err)
			}
			tc.mod(page)
			if err := g2.CopyTo(1, gnttab.Ref(r), 0, page[:64]); err != nil {
				t.Fatal(err)
			}
			before := e.c.hvs[hostOf(e, 2)].Ports(2)
			ccfg := vchan.Config{Hypervisor: e.c.conns[2], XenStore: e.xsClient(t)}
			cli, err := ccfg.Dial(1, e.path)
			if !errors.Is(err, vchan.ErrLayout) {
				if cli != nil {
					cli.Close()
				}
				t.Fatalf("dial: %v, want ErrLayout", err)
			}
			t.Logf("refused: %v", err)
			if after := e.c.hvs[hostOf(e, 2)].Ports(2); len(after) != len(before) {
				t.Errorf("ports left bound: %v (before %v)", after, before)
			}
		})
	}
}

func hostOf(e *vchanEnv, d DomID) string {
	e.c.n.mu.Lock()
	defer e.c.n.mu.Unlock()
	return e.c.n.where[d]
}

// TestVchanClose: Read drains what the peer wrote before it closed, then
// returns io.EOF; Write to a closed peer fails, never hangs; Close
// interrupts a blocked Read; deadlines time out as net's do.
func TestVchanClose(t *testing.T) {
	for _, where := range []string{"local", "remote"} {
		t.Run(where, func(t *testing.T) {
			e := newVchanEnv(t, where == "remote")
			srv, cli := e.pair(t, 0, 0)
			if err := srv.WaitClient(); err != nil {
				t.Fatal(err)
			}
			if srv.State() != 1 || cli.State() != 1 {
				t.Fatalf("states %d %d", srv.State(), cli.State())
			}
			// Deadlines.
			srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			start := time.Now()
			_, err := srv.Read(make([]byte, 10))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read past its deadline: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the deadline fired after %v", d)
			}
			// A deadline moved into the past wakes a blocked Read.
			srv.SetReadDeadline(time.Time{})
			errc := make(chan error, 1)
			go func() { _, err := srv.Read(make([]byte, 10)); errc <- err }()
			time.Sleep(30 * time.Millisecond)
			srv.SetReadDeadline(time.Now())
			if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read after its deadline moved: %v", err)
			}
			srv.SetReadDeadline(time.Time{})
			// A full ring times a Write out.
			cli.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := cli.Write(make([]byte, 5000)) // the left ring holds 1024
			if !errors.Is(err, os.ErrDeadlineExceeded) || n != 1024 {
				t.Fatalf("write into a full ring: %d %v", n, err)
			}
			cli.SetWriteDeadline(time.Time{})
			if _, err := io.ReadFull(srv, make([]byte, 1024)); err != nil {
				t.Fatal(err)
			}
			// The client writes and closes; the server reads it all, then EOF.
			msg := bytes.Repeat([]byte("last words "), 90)
			if _, err := cli.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := cli.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(srv)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("read %d bytes (%v), want %d then EOF", len(got), err, len(msg))
			}
			if _, err := srv.Write([]byte("x")); !errors.Is(err, vchan.ErrPeerGone) {
				t.Fatalf("write to a closed peer: %v", err)
			}
			if srv.State() != 0 {
				t.Fatalf("state after the client left: %d", srv.State())
			}
			// Close interrupts a blocked Read of another pair.
			srv2, cli2 := e.pairAt(t, e.path+"2")
			go func() { _, err := cli2.Read(make([]byte, 10)); errc <- err }()
			time.Sleep(30 * time.Millisecond)
			cli2.Close()
			if err := <-errc; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read interrupted by Close: %v", err)
			}
			if _, err := srv2.Read(make([]byte, 10)); err != io.EOF {
				t.Fatalf("server of a closed client: %v", err)
			}
		})
	}
}

func (e *vchanEnv) pairAt(t *testing.T, path string) (srv, cli *vchan.Conn) {
	p := e.path
	e.path = path
	defer func() { e.path = p }()
	return e.pair(t, 0, 0)
}

// TestVchanPeerDeath: the peer's domain or its host dies mid-stream;
// the survivor's Read returns io.EOF and its Write ErrPeerGone, soon.
func TestVchanPeerDeath(t *testing.T) {
	for _, tc := range []struct {
		name       string
		remote     bool
		serverDies bool
		hostDies   bool
	}{
		{"local client dies", false, false, false},
		{"local server dies", false, true, false},
		{"remote client dies", true, false, false},
		{"remote server dies", true, true, false},
		{"client host dies", true, false, true},
		{"server host dies", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newVchanEnv(t, tc.remote)
			srv, cli := e.pair(t, 16, 16)
			survivor, doomed, dead := srv, cli, e.cli
			if tc.serverDies {
				survivor, doomed, dead = cli, srv, e.srv
			}
			// The doomed end streams until it dies; the survivor reads.
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := doomed.Write(buf); err != nil {
						return
					}
				}
			}()
			if _, err := io.ReadFull(survivor, make([]byte, 1<<20)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			e.dead[doomed] = true
			if tc.hostDies {
				e.c.n.kill(hostOf(e, dead))
			} else {
				e.c.hvs[hostOf(e, dead)].RemoveDomain(dead)
			}
			errc := make(chan error, 2)
			go func() {
				_, err := io.Copy(io.Discard, survivor)
				if err == nil {
					err = io.EOF
				}
				errc <- err
			}()
			select {
			case err := <-errc:
				if err != io.EOF {
					t.Fatalf("read: %v, want EOF", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the survivor's read hangs")
			}
			if _, err := survivor.Write([]byte("anyone?")); !errors.Is(err, vchan.ErrPeerGone) {
				t.Fatalf("write: %v", err)
			}
			t.Logf("the survivor saw it %v after", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestVchanRoundTrips: small messages back and forth, each end asleep
// between them, so every message needs its notify bit honoured.
func TestVchanRoundTrips(t *testing.T) {
	for _, where := range []string{"local", "remote"} {
		t.Run(where, func(t *testing.T) {
			e := newVchanEnv(t, where == "remote")
			srv, cli := e.pair(t, 0, 0)
			rounds := 5000
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64)
				for range rounds {
					n, err := srv.Read(buf)
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := srv.Write(buf[:n]); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			msg, got := make([]byte, 64), make([]byte, 64)
			start := time.Now()
			for i := range rounds {
				n := 1 + i%len(msg)
				for j := range n {
					msg[j] = byte(i + j)
				}
				if _, err := cli.Write(msg[:n]); err != nil {
					t.Fatal(err)
				}
				cli.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(cli, got[:n]); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if !bytes.Equal(got[:n], msg[:n]) {
					t.Fatalf("round %d: echo differs", i)
				}
			}
			t.Logf("%v per round trip", time.Since(start)/time.Duration(rounds))
			wg.Wait()
		})
	}
}

// TestVchanEarlyServer: a server may write before its client comes (up
// to its ring), as libxenvchan's may; WaitClient returns once the client
// is there, and the client reads what was written.
func TestVchanEarlyServer(t *testing.T) {
	e := newVchanEnv(t, true)
	scfg := vchan.Config{Hypervisor: e.c.conns[1], XenStore: e.xsClient(t)}
	srv, err := scfg.Listen(2, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.State() != 2 {
		t.Fatalf("state before the client: %d", srv.State())
	}
	early := bytes.Repeat([]byte("e"), 2048) // the whole right ring
	if _, err := srv.Write(early); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- srv.WaitClient() }()
	time.Sleep(20 * time.Millisecond)
	ccfg := vchan.Config{Hypervisor: e.c.conns[2], XenStore: e.xsClient(t)}
	cli, err := ccfg.Dial(1, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(early))
	if _, err := io.ReadFull(cli, got); err != nil || !bytes.Equal(got, early) {
		t.Fatalf("early data: %v", err)
	}
}

// TestVchanCorruptIndex: a peer's index that claims more than the ring
// holds fails Read with ErrCorrupt (libxenvchan would stall forever).
func TestVchanCorruptIndex(t *testing.T) {
	e := newVchanEnv(t, false)
	srv, cli := e.pair(t, 0, 0)
	if _, err := srv.Write([]byte("fine")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cli, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	// right.prod (offset 12) jumps far past right.cons, through the
	// grant the client has.
	checker := xs.New(mustPair(t, e.xs))
	defer checker.Close()
	ref, _ := checker.Read(e.path + "/ring-ref")
	r, _ := strconv.Atoi(string(ref))
	if err := gnttab.Open(e.c.conns[2]).CopyTo(1, gnttab.Ref(r), 12, []byte{0, 0, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if n, err := cli.Read(make([]byte, 10)); !errors.Is(err, vchan.ErrCorrupt) {
		t.Fatalf("read from a corrupt ring: %d %v", n, err)
	}
}
