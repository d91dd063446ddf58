package hypervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	ghv "shi/guest/hv"
	gring "shi/guest/ring"
	"shi/internal/abi"
	xevtchn "shi/internal/evtchn"
	"shi/internal/hypercall"
	"shi/internal/ring"
	"shi/internal/transport"
)

// fakeNet joins hypervisors in one process: messages go through an
// ordered queue per destination, links are socket pairs. The tests can
// keep a copy of any link end to speak on it as a hostile domain would.
type fakeNet struct {
	mu     sync.Mutex
	hvs    map[string]*Hypervisor
	where  map[DomID]string
	queues map[string]chan delivery
	ends   map[[2]DomID]*os.File // the dialer's end, by (dialing dom, target dom)
	down   map[string]bool
}

type delivery struct {
	from string
	m    transport.Msg
}

func newFakeNet() *fakeNet {
	return &fakeNet{hvs: map[string]*Hypervisor{}, where: map[DomID]string{}, queues: map[string]chan delivery{},
		ends: map[[2]DomID]*os.File{}, down: map[string]bool{}}
}

// host starts a hypervisor named name on the network.
func (n *fakeNet) host(t *testing.T, name string, lb *logBuf) *Hypervisor {
	h := New(Config{Logger: slog.New(slog.NewTextHandler(lb, nil)).With("host", name), Host: name,
		Peers: fakePeers{n, name}, Locate: fakeLocator{n, name}, Timeout: 3 * time.Second})
	q := make(chan delivery, 1<<16)
	n.mu.Lock()
	n.hvs[name] = h
	n.queues[name] = q
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range q {
			h.Inbound(d.from, d.m)
		}
	}()
	t.Cleanup(func() {
		h.Close()
		n.mu.Lock()
		n.down[name] = true
		delete(n.queues, name)
		n.mu.Unlock()
		close(q)
		<-done
	})
	return h
}

func (n *fakeNet) place(dom DomID, host string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.where[dom] = host
}

// kill makes a host vanish: nothing reaches it any more, and the others
// learn it is down, as from membership.
func (n *fakeNet) kill(name string) {
	n.mu.Lock()
	n.down[name] = true
	var others []*Hypervisor
	for h, hv := range n.hvs {
		if h != name {
			others = append(others, hv)
		}
	}
	n.mu.Unlock()
	for _, hv := range others {
		hv.HostDown(name)
	}
}

type fakePeers struct {
	n    *fakeNet
	self string
}

func (p fakePeers) Send(host string, m *transport.Msg) error {
	p.n.mu.Lock()
	defer p.n.mu.Unlock()
	q := p.n.queues[host]
	if q == nil || p.n.down[host] || p.n.down[p.self] {
		return errors.New("fake: unreachable")
	}
	c := *m
	c.Data = bytes.Clone(m.Data)
	q <- delivery{p.self, c}
	return nil
}

func (p fakePeers) Link(ctx context.Context, host string, hello []byte) (*os.File, error) {
	p.n.mu.Lock()
	h := p.n.hvs[host]
	down := p.n.down[host] || p.n.down[p.self]
	p.n.mu.Unlock()
	if h == nil || down {
		return nil, syscall.EHOSTUNREACH
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "link"), os.NewFile(uintptr(fds[1]), "link")
	up, err := h.AcceptLink(p.self, hello)
	if err != nil {
		mine.Close()
		theirs.Close()
		return nil, err
	}
	up(theirs)
	from, to, _ := decodeHello(hello)
	if dup, err := unix.Dup(fds[0]); err == nil {
		p.n.mu.Lock()
		p.n.ends[[2]DomID{from, to}] = os.NewFile(uintptr(dup), "link-copy")
		p.n.mu.Unlock()
	}
	return mine, nil
}

type fakeLocator struct {
	n    *fakeNet
	self string
}

func (l fakeLocator) Locate(dom DomID) (xevtchn.Host, bool) {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	h, ok := l.n.where[dom]
	if !ok {
		return "", false
	}
	if h == l.self {
		return xevtchn.Local, true
	}
	return xevtchn.Host(h), true
}

// cluster is two or more hosts with domains on them.
type cluster struct {
	n     *fakeNet
	hvs   map[string]*Hypervisor
	log   *logBuf
	conns map[DomID]*ghv.Conn
	evts  map[DomID]*evtchn.Handle
}

func newCluster(t *testing.T, names ...string) *cluster {
	c := &cluster{n: newFakeNet(), hvs: map[string]*Hypervisor{}, log: &logBuf{},
		conns: map[DomID]*ghv.Conn{}, evts: map[DomID]*evtchn.Handle{}}
	for _, name := range names {
		c.hvs[name] = c.n.host(t, name, c.log)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hypervisor logs:\n%s", c.log)
		}
	})
	return c
}

// dom adds domain id on host and connects an in-process guest to it.
func (c *cluster) dom(t *testing.T, host string, id DomID) *ghv.Conn {
	t.Helper()
	c.n.place(id, host)
	e := &env{h: c.hvs[host], log: c.log}
	g := e.dom(t, id, DomainConfig{Name: fmt.Sprintf("d%d", id)})
	c.conns[id] = g
	return g
}

// remotePair binds a(1, host a):pa <-> b(2, host b):pb and consumes pb's
// initial event.
func remotePair(t *testing.T) (c *cluster, ea, eb *evtchn.Handle, pa, pb evtchn.Port) {
	c = newCluster(t, "a", "b")
	ea = openEvt(t, c.dom(t, "a", 1))
	eb = openEvt(t, c.dom(t, "b", 2))
	c.evts[1], c.evts[2] = ea, eb
	pa, pb = bindPair(t, ea, eb)
	return
}

func TestRemoteEvtchnPingPong(t *testing.T) {
	c, ea, eb, pa, pb := remotePair(t)
	if got := c.hvs["b"].LinkPeers(2); len(got) != 1 || got[0] != 1 {
		t.Fatalf("dom2's links: %v", got)
	}
	if st, err := eb.Status(pb); err != nil || st.Status != abi.EVTCHNSTAT_interdomain || st.RemoteDom != 1 || st.RemotePort != pa {
		t.Fatalf("status of the bound port: %+v %v", st, err)
	}
	pingPong(t, eb, ea, pb, pa, 1000)
}

// N sends before the receiver takes the event give one event; a masked
// port fires once unmasked.
func TestRemoteCoalesceAndMask(t *testing.T) {
	_, ea, eb, pa, pb := remotePair(t)
	for range 10 {
		if err := eb.Notify(pb); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := ea.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("wait: %v %v", p, err)
	}
	if p, err := ea.Wait(200 * time.Millisecond); !errors.Is(err, evtchn.ErrNoEvent) {
		t.Fatalf("ten sends gave more than one event: %v %v", p, err)
	}
	// pa is masked (not unmasked since Wait returned it).
	eb.Notify(pb)
	if p, err := ea.Wait(200 * time.Millisecond); !errors.Is(err, evtchn.ErrNoEvent) {
		t.Fatalf("a masked port fired: %v %v", p, err)
	}
	if err := ea.Unmask(pa); err != nil {
		t.Fatal(err)
	}
	if p, err := ea.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("unmask did not deliver: %v %v", p, err)
	}
}

// A peer that closes, dies, or whose host dies: the port goes back to
// unbound (reserved for the peer) and is kicked, so a waiter wakes and
// status says why.
func TestRemotePeerGone(t *testing.T) {
	for _, how := range []string{"close", "death", "host death"} {
		t.Run(how, func(t *testing.T) {
			c, ea, eb, pa, pb := remotePair(t)
			woke := make(chan error, 1)
			go func() {
				p, err := ea.Wait(10 * time.Second)
				if err == nil && p != pa {
					err = fmt.Errorf("woke on port %d", p)
				}
				woke <- err
			}()
			time.Sleep(20 * time.Millisecond) // let it block
			switch how {
			case "close":
				if err := eb.Unbind(pb); err != nil {
					t.Fatal(err)
				}
			case "death":
				c.hvs["b"].RemoveDomain(2)
			case "host death":
				c.n.kill("b")
			}
			if err := <-woke; err != nil {
				t.Fatal(err)
			}
			st, err := ea.Status(pa)
			if err != nil || st.Status != abi.EVTCHNSTAT_unbound || st.RemoteDom != 2 {
				t.Fatalf("status after the peer went: %+v %v", st, err)
			}
			if how != "close" && len(c.hvs["a"].LinkPeers(1)) != 0 {
				t.Fatalf("links left: %v", c.hvs["a"].LinkPeers(1))
			}
		})
	}
}

// A refused remote bind gives the reserved port back, and binding a port
// not offered is refused.
func TestRemoteBindRefused(t *testing.T) {
	c := newCluster(t, "a", "b")
	ea := openEvt(t, c.dom(t, "a", 1))
	eb := openEvt(t, c.dom(t, "b", 2))
	openEvt(t, c.dom(t, "b", 3))
	p, err := ea.AllocUnbound(3) // offered to dom3, not dom2
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eb.BindInterdomain(1, p); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bind to a port offered to someone else: %v", err)
	}
	if _, err := eb.BindInterdomain(9, 1); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("bind to a domain that does not exist: %v", err)
	}
	if ports := c.hvs["b"].Ports(2); len(ports) != 0 {
		t.Fatalf("ports left after refused binds: %+v", ports)
	}
}

// shareRemote: dom1 on a shares n pages with dom2 on b, which maps them.
func shareRemote(t *testing.T, writable bool) (c *cluster, ga, gb *gnttab.Handle, ea, eb *evtchn.Handle, pa, pb evtchn.Port, s *gnttab.Share, m *gnttab.Mapping) {
	c, ea, eb, pa, pb = remotePair(t)
	ga = gnttab.Open(c.conns[1])
	gb = gnttab.Open(c.conns[2])
	s, err := ga.SharePages(2, 2, writable)
	if err != nil {
		t.Fatal(err)
	}
	copy(s.Bytes(), "before the map")
	m, err = gb.Map(1, s.Refs, writable)
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestRemoteGrantCoherence(t *testing.T) {
	_, ga, gb, ea, eb, pa, pb, s, m := shareRemote(t, true)
	if got := string(m.Bytes()[:14]); got != "before the map" {
		t.Fatalf("replica starts with %q", got)
	}
	// The granter writes and sends: the mapper sees the bytes once it has
	// the event.
	copy(s.Bytes()[4096+100:], "from a")
	if err := ea.Notify(pa); err != nil {
		t.Fatal(err)
	}
	if p, err := eb.Wait(5 * time.Second); err != nil || p != pb {
		t.Fatalf("wait: %v %v", p, err)
	}
	eb.Unmask(pb)
	if got := string(m.Bytes()[4096+100 : 4096+106]); got != "from a" {
		t.Fatalf("after the event the mapper sees %q", got)
	}
	// Both write different bytes of one word between events: neither
	// overwrites the other's.
	s.Bytes()[200] = 'A'
	m.Bytes()[201] = 'B'
	if err := eb.Notify(pb); err != nil {
		t.Fatal(err)
	}
	if p, err := ea.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("wait: %v %v", p, err)
	}
	ea.Unmask(pa)
	ea.Notify(pa)
	eb.Wait(5 * time.Second)
	eb.Unmask(pb)
	if s.Bytes()[200] != 'A' || s.Bytes()[201] != 'B' || m.Bytes()[200] != 'A' || m.Bytes()[201] != 'B' {
		t.Fatalf("one word written by both sides: granter %q mapper %q", s.Bytes()[200:202], m.Bytes()[200:202])
	}
	// Mapped remotely, the grant cannot end.
	if err := ga.EndAccess(s.Refs[0]); !errors.Is(err, gnttab.ErrBusy) {
		t.Fatalf("end access while mapped remotely: %v", err)
	}
	// The mapper's last writes before its unmap are in the granter's
	// page by the time the grant can end.
	copy(m.Bytes()[300:], "last words")
	if err := gb.Unmap(m); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ga.EndAccess(s.Refs[0]) != nil {
		if time.Now().After(deadline) {
			t.Fatal("grant still busy after the unmap")
		}
		ea.Acquire()
		time.Sleep(time.Millisecond)
	}
	if got := string(s.Bytes()[300:310]); got != "last words" {
		t.Fatalf("after the unmap the granter has %q", got)
	}
	if err := ga.EndAccess(s.Refs[1]); err != nil {
		t.Fatal(err)
	}
}

func TestRemoteGrantReadOnly(t *testing.T) {
	c, _, _, _, _ := remotePair(t)
	ga := gnttab.Open(c.conns[1])
	gb := gnttab.Open(c.conns[2])
	s, err := ga.SharePages(2, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gb.Map(1, s.Refs, true); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("writable map of a read-only grant: %v", err)
	}
	m, err := gb.Map(1, s.Refs, false)
	if err != nil {
		t.Fatal(err)
	}
	if f := ga.Entry(s.Refs[0]).Flags; f&abi.GTF_reading == 0 || f&abi.GTF_writing != 0 {
		t.Fatalf("flags while mapped read-only: %#x", f)
	}
	// The replica is mapped read-only: mprotect shows it.
	if writableAt(t, m.Bytes()) {
		t.Fatal("read-only map of another host's grant is writable")
	}
	if err := gb.CopyTo(1, s.Refs[0], 0, []byte("x")); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("copy into a read-only grant: %v", err)
	}
	gb.Unmap(m)
}

// writableAt reads /proc/self/maps for the mapping at b.
func writableAt(t *testing.T, b []byte) bool {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimPrefix(fmt.Sprintf("%p", &b[0]), "0x") + "-"
	for _, line := range bytes.Split(maps, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(want)) {
			f := bytes.Fields(line)
			return len(f) > 1 && f[1][1] == 'w'
		}
	}
	t.Fatalf("no mapping at %s in /proc/self/maps", want)
	return false
}

func TestRemoteCopy(t *testing.T) {
	c, _, _, _, _ := remotePair(t)
	ga := gnttab.Open(c.conns[1])
	gb := gnttab.Open(c.conns[2])
	s, err := ga.SharePages(2, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	copy(s.Bytes()[10:], "granted")
	buf := make([]byte, 7)
	if err := gb.CopyFrom(buf, 1, s.Refs[0], 10); err != nil || string(buf) != "granted" {
		t.Fatalf("copy from another host's grant: %q %v", buf, err)
	}
	if err := gb.CopyTo(1, s.Refs[0], 20, []byte("copied")); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Bytes()[20:26]); got != "copied" {
		t.Fatalf("copy to another host's grant: %q", got)
	}
	if err := gb.CopyTo(1, 999, 0, []byte("x")); !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("copy through a ref that grants nothing: %v", err)
	}
}

// The unmap notification crosses hosts: the mapper's unmap (or death)
// clears the byte in the granter's page and sends on the port, in that
// order.
func TestRemoteUnmapNotify(t *testing.T) {
	for _, how := range []string{"unmap", "death"} {
		t.Run(how, func(t *testing.T) {
			c, ea, eb, pa, pb := remotePair(t)
			ga := gnttab.Open(c.conns[1])
			gb := gnttab.Open(c.conns[2])
			s, err := ga.SharePages(2, 1, true)
			if err != nil {
				t.Fatal(err)
			}
			s.Bytes()[20] = 1 // like vchan's cli_live
			m, err := gb.MapNotify(1, s.Refs[0], true, 20, uint32(pb))
			if err != nil {
				t.Fatal(err)
			}
			if m.Bytes()[20] != 1 {
				t.Fatal("replica lacks the live byte")
			}
			_ = eb
			switch how {
			case "unmap":
				if err := gb.Unmap(m); err != nil {
					t.Fatal(err)
				}
			case "death":
				c.hvs["b"].RemoveDomain(2)
			}
			if p, err := ea.Wait(5 * time.Second); err != nil || p != pa {
				t.Fatalf("no event: %v %v", p, err)
			}
			if s.Bytes()[20] != 0 {
				t.Fatalf("live byte %d after the mapper went", s.Bytes()[20])
			}
		})
	}
}

// A granter (or its host) that dies revokes the replica; the share's
// notification byte is cleared in it.
func TestRemoteGranterGone(t *testing.T) {
	for _, how := range []string{"death", "host death"} {
		t.Run(how, func(t *testing.T) {
			c, ea, eb, pa, pb := remotePair(t)
			gc := c.conns[1]
			ga := gnttab.Open(gc)
			gb := gnttab.Open(c.conns[2])
			s, err := ga.SharePagesNotify(2, 1, true, 21, uint32(pa))
			if err != nil {
				t.Fatal(err)
			}
			s.Bytes()[21] = 1 // like vchan's srv_live
			m, err := gb.Map(1, s.Refs, true)
			if err != nil {
				t.Fatal(err)
			}
			_ = ea
			switch how {
			case "death":
				c.hvs["a"].RemoveDomain(1)
			case "host death":
				c.n.kill("a")
			}
			deadline := time.Now().Add(5 * time.Second)
			for !m.Revoked() || (how == "death" && m.Bytes()[21] != 0) {
				if time.Now().After(deadline) {
					t.Fatalf("revoked %v, live byte %d", m.Revoked(), m.Bytes()[21])
				}
				if p, err := eb.Wait(100 * time.Millisecond); err == nil {
					eb.Unmask(p)
				}
			}
			if st, _ := eb.Status(pb); st.Status != abi.EVTCHNSTAT_unbound {
				t.Fatalf("port status %+v", st)
			}
			gb.Unmap(m)
		})
	}
}

// A hostile mapper forges updates on its link: to a page it maps
// read-only, to a grant it never mapped, garbage. All are refused and the
// granter's page stays as it was.
func TestRemoteForgedUpdates(t *testing.T) {
	c, _, _, _, _ := remotePair(t)
	ga := gnttab.Open(c.conns[1])
	gb := gnttab.Open(c.conns[2])
	s, err := ga.SharePages(2, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	copy(s.Bytes(), "pristine")
	m, err := gb.Map(1, s.Refs, false)
	if err != nil {
		t.Fatal(err)
	}
	defer gb.Unmap(m)
	c.n.mu.Lock()
	end := c.n.ends[[2]DomID{2, 1}]
	c.n.mu.Unlock()
	if end == nil {
		t.Fatal("no link end for dom2")
	}
	frame := func(typ, dir byte, ref, gen uint32, payload []byte) []byte {
		b := []byte{typ, dir, 0, 0}
		b = appendU32(b, ref)
		b = appendU32(b, gen)
		b = appendU32(b, uint32(len(payload)))
		return append(b, payload...)
	}
	run := append([]byte{0, 0, 3, 0}, "EVIL"[:3]...)
	for gen := uint32(0); gen < 4; gen++ {
		end.Write(frame(2, 1, uint32(s.Refs[0]), gen, run)) // read-only grant
		end.Write(frame(2, 1, 100, gen, run))               // never granted
	}
	time.Sleep(50 * time.Millisecond)
	c.evts[1].Acquire()
	if got := string(s.Bytes()[:8]); got != "pristine" {
		t.Fatalf("forged updates changed the page: %q", got)
	}
	// Garbage drops the link; the granter carries on.
	end.Write([]byte{99, 99, 99, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	time.Sleep(50 * time.Millisecond)
	c.evts[1].Acquire()
	if got := string(s.Bytes()[:8]); got != "pristine" {
		t.Fatalf("garbage changed the page: %q", got)
	}
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// remoteRing shares pages+1 pages of dom1 (host a) with dom2 (host b),
// which maps them; each gets an event handle of its own bound to the
// other.
func remoteRing(t *testing.T, pages int) (ga, gb *gnttab.Handle, ea, eb *evtchn.Handle, pa, pb evtchn.Port, s *gnttab.Share, m *gnttab.Mapping) {
	c, ea, eb, pa, pb := remotePair(t)
	ga = gnttab.Open(c.conns[1])
	gb = gnttab.Open(c.conns[2])
	s, err := ga.SharePages(2, pages, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err = gb.Map(1, s.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	return
}

// A byte stream through a pipe in granted pages between two hosts: every
// byte arrives, in order, whatever the chunk sizes.
func TestRemotePipe(t *testing.T) {
	_, _, ea, eb, pa, pb, s, m := remoteRing(t, 1+16)
	w, err := gring.NewPipeWriter(s.Bytes(), ea, pa)
	if err != nil {
		t.Fatal(err)
	}
	// The reader attaches once the writer's header is in the replica.
	eb.Acquire()
	r, err := gring.NewPipeReader(m.Bytes(), eb, pb)
	if err != nil {
		t.Fatal(err)
	}
	const total = 32 << 20
	src := rand.New(rand.NewPCG(1, 2))
	sum := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 100<<10)
		left := total
		for left > 0 {
			n := 1 + src.IntN(min(left, len(buf)))
			for i := range n {
				buf[i] = byte(src.Uint32())
			}
			sum.Write(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				errc <- err
				return
			}
			left -= n
		}
		errc <- w.Close()
	}()
	got := sha256.New()
	buf := make([]byte, 70<<10)
	n := 0
	for {
		k, err := r.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read at %d: %v", n, err)
		}
		got.Write(buf[:k])
		n += k
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != total || !bytes.Equal(got.Sum(nil), sum.Sum(nil)) {
		t.Fatalf("read %d bytes of %d; checksums differ: %v", n, total, !bytes.Equal(got.Sum(nil), sum.Sum(nil)))
	}
}

// An io/ring.h ring with lazy notification (req_event, rsp_event and the
// final checks) between two hosts carries many requests without a stall.
func TestRemoteRingLazy(t *testing.T) {
	requests := 20000
	if testing.Short() {
		requests = 2000
	}
	_, _, ea, eb, pa, pb, s, m := remoteRing(t, 1)
	f, err := gring.NewFront(s.Bytes(), 16, ea, pa)
	if err != nil {
		t.Fatal(err)
	}
	if err := ea.Notify(pa); err != nil { // the initialised ring goes to the back end
		t.Fatal(err)
	}
	if p, err := eb.Wait(5 * time.Second); err != nil || p != pb {
		t.Fatalf("wait: %v %v", p, err)
	}
	eb.Unmask(pb)
	b, err := gring.NewBack(m.Bytes(), 16, eb, pb)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for served := 0; served < requests; {
			if err := b.WaitRequests(deadline); err != nil {
				errc <- fmt.Errorf("back end after %d: %w", served, err)
				return
			}
			for {
				req, err := b.NextRequest()
				if err != nil {
					errc <- err
					return
				}
				if req == nil {
					break
				}
				rsp := b.NextResponse()
				copy(rsp, req)
				rsp[8]++
				served++
			}
			if err := b.Push(); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	sent, got := 0, 0
	deadline := time.Now().Add(time.Minute)
	for got < requests {
		for sent < requests && !f.Full() {
			req := f.NextRequest()
			binary.LittleEndian.PutUint64(req, uint64(sent))
			req[8] = byte(sent)
			sent++
		}
		if err := f.Push(); err != nil {
			t.Fatal(err)
		}
		if err := f.WaitResponses(deadline); err != nil {
			t.Fatalf("front end after %d responses: %v", got, err)
		}
		for {
			rsp, err := f.NextResponse()
			if err != nil {
				t.Fatal(err)
			}
			if rsp == nil {
				break
			}
			if id := binary.LittleEndian.Uint64(rsp); id != uint64(got) || rsp[8] != byte(got)+1 {
				t.Fatalf("response %d: id %d byte %d", got, id, rsp[8])
			}
			got++
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// vchanEnd is one end of libxenvchan's data path (spec/xen-abi.md §7.4)
// over a control page with both rings inside it (orders 10 and 11), as
// Debian's unmodified library does it: no write is reported, so releases
// diff the page, and both ends write both notify bytes.
type vchanEnd struct {
	page       []byte
	evt        *evtchn.Handle
	port       evtchn.Port
	rd, wr     int // ring offsets
	rdSize     int
	wrSize     int
	rdIdx      int // cons, prod of the ring read
	wrIdx      int // of the ring written
	myReq      int // the byte where the peer asks this end to notify
	peerReq    int // the byte where this end asks the peer
	notifyWait uint32
}

const (
	vchanNotifyWrite = 1
	vchanNotifyRead  = 2
)

func newVchanEnds(page []byte) (srv, cli vchanEnd) {
	// left ring (client writes): 1024 at 1024, indices at 0; right ring
	// (server writes): 2048 at 2048, indices at 8; cli_notify 22,
	// srv_notify 23.
	srv = vchanEnd{page: page, rd: 1024, rdSize: 1024, rdIdx: 0, wr: 2048, wrSize: 2048, wrIdx: 8, myReq: 23, peerReq: 22}
	cli = vchanEnd{page: page, rd: 2048, rdSize: 2048, rdIdx: 8, wr: 1024, wrSize: 1024, wrIdx: 0, myReq: 22, peerReq: 23}
	return
}

// send writes all of b, as libxenvchan_send with blocking.
func (v *vchanEnd) send(b []byte) error {
	for len(b) > 0 {
		v.evt.Acquire()
		cons, prod := ring.Load32(v.page, v.wrIdx), ring.Load32(v.page, v.wrIdx+4)
		free := v.wrSize - int(prod-cons)
		if free == 0 {
			// Ask the reader to tell us when it consumes, then re-check.
			ring.Or8(v.page, v.peerReq, vchanNotifyRead)
			v.evt.Acquire()
			if ring.Load32(v.page, v.wrIdx) == cons {
				if err := v.wait(); err != nil {
					return err
				}
			}
			continue
		}
		n := min(free, len(b))
		for i := range n {
			v.page[v.wr+int(prod+uint32(i))%v.wrSize] = b[i]
		}
		ring.Store32(v.page, v.wrIdx+4, prod+uint32(n))
		b = b[n:]
		if ring.And8(v.page, v.myReq, ^uint8(vchanNotifyWrite))&vchanNotifyWrite != 0 {
			if err := v.evt.Notify(v.port); err != nil {
				return err
			}
		}
	}
	return nil
}

// recv reads exactly len(b), as libxenvchan_recv with blocking.
func (v *vchanEnd) recv(b []byte) error {
	for len(b) > 0 {
		v.evt.Acquire()
		cons, prod := ring.Load32(v.page, v.rdIdx), ring.Load32(v.page, v.rdIdx+4)
		avail := int(prod - cons)
		if avail == 0 {
			ring.Or8(v.page, v.peerReq, vchanNotifyWrite)
			v.evt.Acquire()
			if ring.Load32(v.page, v.rdIdx+4) == prod {
				if err := v.wait(); err != nil {
					return err
				}
			}
			continue
		}
		n := min(avail, len(b))
		for i := range n {
			b[i] = v.page[v.rd+int(cons+uint32(i))%v.rdSize]
		}
		ring.Store32(v.page, v.rdIdx, cons+uint32(n))
		b = b[n:]
		if ring.And8(v.page, v.myReq, ^uint8(vchanNotifyRead))&vchanNotifyRead != 0 {
			if err := v.evt.Notify(v.port); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v *vchanEnd) wait() error {
	p, err := v.evt.Wait(20 * time.Second)
	if err != nil {
		return fmt.Errorf("stalled: %w", err)
	}
	return v.evt.Unmask(p)
}

// TestRemoteVchanNotifyBits runs libxenvchan's request-then-clear notify
// protocol between hosts, in diff mode: both ends write both notify
// bytes, so one end's request can cross the other's clear. No wake-up is
// lost for good: the update's arrival raises the port, and a write that
// no event released is shipped by the background flush. Many small
// messages each way, then a stream.
func TestRemoteVchanNotifyBits(t *testing.T) {
	rounds := 20000
	if testing.Short() {
		rounds = 2000
	}
	_, _, ea, eb, pa, pb, s, m := remoteRing(t, 1)
	srv, cli := newVchanEnds(s.Bytes())
	srv.evt, srv.port = ea, pa
	cli.page, cli.evt, cli.port = m.Bytes(), eb, pb
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 300)
		for i := range rounds {
			n := 1 + i%len(buf)
			if err := srv.recv(buf[:n]); err != nil {
				errc <- fmt.Errorf("server round %d: %w", i, err)
				return
			}
			if err := srv.send(buf[:n]); err != nil {
				errc <- err
				return
			}
		}
		// Then a stream the client only reads.
		for i := range 1 << 18 {
			buf[0] = byte(i)
			if err := srv.send(buf[:1]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf, got := make([]byte, 300), make([]byte, 300)
	for i := range rounds {
		n := 1 + i%len(buf)
		for j := range n {
			buf[j] = byte(i + j)
		}
		if err := cli.send(buf[:n]); err != nil {
			t.Fatalf("client round %d: %v", i, err)
		}
		if err := cli.recv(got[:n]); err != nil {
			t.Fatalf("client round %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], got[:n]) {
			t.Fatalf("round %d: echo %v, sent %v", i, got[:n], buf[:n])
		}
	}
	for i := range 1 << 18 {
		if err := cli.recv(got[:1]); err != nil {
			t.Fatalf("stream byte %d: %v", i, err)
		}
		if got[0] != byte(i) {
			t.Fatalf("stream byte %d is %d", i, got[0])
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A privileged domain asks the status of a port of another host's
// domain; an unprivileged one may not.
func TestRemoteStatus(t *testing.T) {
	c, _, _, pa, pb := remotePair(t)
	c.n.place(3, "a")
	priv := (&env{h: c.hvs["a"], log: c.log}).dom(t, 3, DomainConfig{Name: "driver", Privileged: true})
	r, _, err := priv.Call(hypercall.Msg{Op: hypercall.OpEvtchnStatus, Dom: 2, Port: uint32(pb)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := abi.DecodeEvtchnStatus(r.Data)
	if err != nil || st.Status != abi.EVTCHNSTAT_interdomain || st.RemoteDom != 1 || st.RemotePort != pa {
		t.Fatalf("status of dom2's port: %+v %v", st, err)
	}
	if _, _, err := c.conns[1].Call(hypercall.Msg{Op: hypercall.OpEvtchnStatus, Dom: 2, Port: uint32(pb)}); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("an unprivileged domain asked: %v", err)
	}
}

// Two pipes at once between two hosts, one each way, each end writing
// and reading from two goroutines (an event handle each), in random chunk
// sizes: every byte arrives, in order, and nothing stalls.
func TestRemotePipeDuplex(t *testing.T) {
	const total = 16 << 20
	c, _, _, _, _ := remotePair(t)
	ga, gb := gnttab.Open(c.conns[1]), gnttab.Open(c.conns[2])
	type end struct {
		g       *gnttab.Handle
		out, in *evtchn.Handle
		peer    DomID
		w       *gring.PipeWriter
		r       *gring.PipeReader
		share   *gnttab.Share
		pOut    evtchn.Port
		mapped  *gnttab.Mapping
		pIn     evtchn.Port
		outSeed uint64
		inSeed  uint64
	}
	ends := []*end{{g: ga, peer: 2, outSeed: 1, inSeed: 2}, {g: gb, peer: 1, outSeed: 2, inSeed: 1}}
	for i, e := range ends {
		conn := c.conns[DomID(i+1)]
		e.out, e.in = openEvt(t, conn), openEvt(t, conn)
		var err error
		if e.share, err = e.g.SharePages(e.peer, 1+8, true); err != nil {
			t.Fatal(err)
		}
		if e.pOut, err = e.out.AllocUnbound(e.peer); err != nil {
			t.Fatal(err)
		}
		if e.w, err = gring.NewPipeWriter(e.share.Bytes(), e.out, e.pOut); err != nil {
			t.Fatal(err)
		}
	}
	for i, e := range ends {
		o := ends[1-i]
		var err error
		if e.mapped, err = e.g.Map(e.peer, o.share.Refs, true); err != nil {
			t.Fatal(err)
		}
		if e.pIn, err = e.in.BindInterdomain(e.peer, o.pOut); err != nil {
			t.Fatal(err)
		}
		if e.r, err = gring.NewPipeReader(e.mapped.Bytes(), e.in, e.pIn); err != nil {
			t.Fatal(err)
		}
	}
	errc := make(chan error, 4)
	for _, e := range ends {
		go func() {
			rng := rand.New(rand.NewPCG(e.outSeed, 3))
			data := rand.New(rand.NewPCG(e.outSeed, 4))
			buf := make([]byte, 100<<10)
			for left := total; left > 0; {
				n := 1 + rng.IntN(min(left, len(buf)))
				for i := range n {
					buf[i] = byte(data.Uint32())
				}
				if _, err := e.w.Write(buf[:n]); err != nil {
					errc <- err
					return
				}
				left -= n
			}
			errc <- e.w.Close()
		}()
		go func() {
			data := rand.New(rand.NewPCG(e.inSeed, 4))
			rng := rand.New(rand.NewPCG(e.inSeed, 5))
			buf := make([]byte, 70<<10)
			got := 0
			for {
				n, err := e.r.Read(buf[:1+rng.IntN(len(buf))])
				if err == io.EOF {
					break
				}
				if err != nil {
					errc <- fmt.Errorf("read at %d: %w", got, err)
					return
				}
				for i := range n {
					if want := byte(data.Uint32()); buf[i] != want {
						errc <- fmt.Errorf("byte %d is %d, want %d", got+i, buf[i], want)
						return
					}
				}
				got += n
			}
			if got != total {
				errc <- fmt.Errorf("read %d of %d", got, total)
				return
			}
			errc <- nil
		}()
	}
	timeout := time.After(2 * time.Minute)
	for range 4 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatalf("stalled:\n%v\n%v", ends[0].g, ends[1].g)
		}
	}
}

// TestRemoteRTT measures an event round trip between two hypervisors'
// domains in one process (their link a socket pair), for profiling with
// SHI_RTT=1 go test -run RemoteRTT -cpuprofile.
func TestRemoteRTT(t *testing.T) {
	if os.Getenv("SHI_RTT") == "" {
		t.Skip("set SHI_RTT=1")
	}
	_, ea, eb, pa, pb := remotePair(t)
	const rounds = 20000
	done := make(chan error, 1)
	go func() {
		for range rounds {
			p, err := ea.Wait(5 * time.Second)
			if err != nil {
				done <- err
				return
			}
			ea.Unmask(p)
			ea.Notify(pa)
		}
		done <- nil
	}()
	start := time.Now()
	for range rounds {
		eb.Notify(pb)
		p, err := eb.Wait(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		eb.Unmask(p)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("round trip %v", time.Since(start)/rounds)
}
