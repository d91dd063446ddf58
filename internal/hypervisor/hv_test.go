package hypervisor

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"shi/internal/abi"
	"shi/internal/hypercall"
	"shi/internal/shm"
)

// logBuf collects log lines safely.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	h   *Hypervisor
	log *logBuf
}

func newEnv(t testing.TB) *env {
	t.Helper()
	lb := &logBuf{}
	h := New(Config{Logger: slog.New(slog.NewTextHandler(lb, nil))})
	t.Cleanup(h.Close)
	return &env{h: h, log: lb}
}

// dom adds a domain and connects an in-process guest to it.
func (e *env) dom(t testing.TB, id DomID, cfg DomainConfig) *ghv.Conn {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "d" + string(rune('0'+id))
	}
	f, err := e.h.AddDomain(id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, f)
	g, err := ghv.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func rawConn(t testing.TB, f *os.File) *net.UnixConn {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := shm.FileConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openEvt(t *testing.T, c *ghv.Conn) *evtchn.Handle {
	t.Helper()
	h, err := evtchn.Open(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// bindPair makes a channel a(1):pa <-> b(2):pb and consumes the initial
// event of pb.
func bindPair(t *testing.T, a, b *evtchn.Handle) (pa, pb evtchn.Port) {
	t.Helper()
	pa, err := a.AllocUnbound(b.DomID())
	if err != nil {
		t.Fatal(err)
	}
	pb, err = b.BindInterdomain(a.DomID(), pa)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := b.Wait(5 * time.Second); err != nil || p != pb {
		t.Fatalf("bound port not pending: %v %v", p, err)
	}
	b.Unmask(pb)
	return pa, pb
}

func TestEvtchnPingPong(t *testing.T) {
	e := newEnv(t)
	a := openEvt(t, e.dom(t, 1, DomainConfig{}))
	b := openEvt(t, e.dom(t, 2, DomainConfig{}))
	pa, pb := bindPair(t, a, b)
	pingPong(t, a, b, pa, pb, 100)
	// After the first round trip both sides hold the other's doorbell:
	// sends no longer reach the agent.
	st, err := a.Status(pa)
	if err != nil || st.Status != abi.EVTCHNSTAT_interdomain || st.RemoteDom != 2 || st.RemotePort != pb {
		t.Fatalf("status %+v %v", st, err)
	}
}

// pingPong runs rounds round trips: a sends on pa, b answers on pb.
func pingPong(t *testing.T, a, b *evtchn.Handle, pa, pb evtchn.Port, rounds int) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for i := range rounds {
			p, err := b.Wait(5 * time.Second)
			if err == nil && p != pb {
				err = fmt.Errorf("woke on port %d", p)
			}
			if err != nil {
				done <- fmt.Errorf("round %d: %w", i, err)
				return
			}
			b.Unmask(pb)
			if err := b.Notify(pb); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range rounds {
		if err := a.Notify(pa); err != nil {
			t.Fatal(err)
		}
		p, err := a.Wait(5 * time.Second)
		if err != nil || p != pa {
			t.Fatalf("round %d: %v %v", i, p, err)
		}
		a.Unmask(pa)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestEvtchnCoalesceAndMask(t *testing.T) {
	e := newEnv(t)
	a := openEvt(t, e.dom(t, 1, DomainConfig{}))
	b := openEvt(t, e.dom(t, 2, DomainConfig{}))
	pa, pb := bindPair(t, a, b)
	for range 10 {
		a.Notify(pa)
	}
	if p, err := b.Pending(); err != nil || p != pb {
		t.Fatalf("pending: %v %v", p, err)
	}
	if _, err := b.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		t.Fatalf("ten sends gave a second event: %v", err)
	}
	b.Unmask(pb)
	if _, err := b.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		t.Fatalf("unmask after drain fired: %v", err)
	}
	// Masked: a send makes it pending without an event...
	b.Mask(pb)
	a.Notify(pa)
	if _, err := b.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		t.Fatalf("masked port fired: %v", err)
	}
	if p, _ := b.IsPending(pb); !p {
		t.Fatal("masked port not pending")
	}
	// ...which unmask delivers.
	b.Unmask(pb)
	if p, err := b.Pending(); err != nil || p != pb {
		t.Fatalf("after unmask: %v %v", p, err)
	}
}

func TestEvtchnPeerClose(t *testing.T) {
	e := newEnv(t)
	a := openEvt(t, e.dom(t, 1, DomainConfig{}))
	b := openEvt(t, e.dom(t, 2, DomainConfig{}))
	pa, pb := bindPair(t, a, b)
	if err := b.Unbind(pb); err != nil {
		t.Fatal(err)
	}
	if p, err := a.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("peer close not seen: %v %v", p, err)
	}
	st, _ := a.Status(pa)
	if st.Status != abi.EVTCHNSTAT_unbound || st.RemoteDom != 2 {
		t.Fatalf("status after peer close %+v", st)
	}
	if err := a.Notify(pa); err != nil { // dropped, as in Xen
		t.Fatal(err)
	}
	// The peer may bind again.
	if _, err := b.BindInterdomain(1, pa); err != nil {
		t.Fatal(err)
	}
	// A domain's death closes its ports: the peer sees it.
	a.Unmask(pa)
	a.Pending()
	a.Unmask(pa)
	e.h.RemoveDomain(2)
	if p, err := a.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("peer death not seen: %v %v", p, err)
	}
	if st, _ := a.Status(pa); st.Status != abi.EVTCHNSTAT_unbound {
		t.Fatalf("status after peer death %+v", st)
	}
}

func TestEvtchnIsolation(t *testing.T) {
	e := newEnv(t)
	a := openEvt(t, e.dom(t, 1, DomainConfig{Name: "alice"}))
	b := openEvt(t, e.dom(t, 2, DomainConfig{Name: "bob"}))
	m := openEvt(t, e.dom(t, 3, DomainConfig{Name: "mallory"}))
	pa, err := a.AllocUnbound(2) // offered to bob only
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.BindInterdomain(1, pa); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bind to a port offered to someone else: %v", err)
	}
	if _, err := m.BindInterdomain(1, 999); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bind to a missing port: %v", err)
	}
	if _, err := m.BindInterdomain(77, 1); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("bind to a missing domain: %v", err)
	}
	if _, err := b.BindInterdomain(1, pa); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.log.String(), "name=mallory") {
		t.Fatalf("refusals not logged with the domain's name:\n%s", e.log)
	}
}

func shareTo(t *testing.T, g *gnttab.Handle, dom DomID, writable bool) *gnttab.Share {
	t.Helper()
	s, err := g.SharePages(dom, 1, writable)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGrantMapSemantics(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	gb := gnttab.Open(e.dom(t, 2, DomainConfig{}))
	s := shareTo(t, ga, 2, true)
	copy(s.Bytes(), "from a")
	m, err := gb.Map(1, s.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Bytes()[:6]) != "from a" {
		t.Fatalf("mapping shows %q", m.Bytes()[:6])
	}
	copy(m.Bytes()[100:], "from b")
	if string(s.Bytes()[100:106]) != "from b" {
		t.Fatal("not the same page")
	}
	if f := ga.Entry(s.Refs[0]).Flags; f&(abi.GTF_reading|abi.GTF_writing) != abi.GTF_reading|abi.GTF_writing {
		t.Fatalf("flags while mapped rw: %#x", f)
	}
	if err := ga.EndAccess(s.Refs[0]); !errors.Is(err, gnttab.ErrBusy) {
		t.Fatalf("end access while mapped: %v", err)
	}
	if err := ga.Unshare(s); !errors.Is(err, gnttab.ErrBusy) {
		t.Fatalf("unshare while mapped: %v", err)
	}
	if err := gb.Unmap(m); err != nil {
		t.Fatal(err)
	}
	if f := ga.Entry(s.Refs[0]).Flags; f&(abi.GTF_reading|abi.GTF_writing) != 0 {
		t.Fatalf("flags after unmap: %#x", f)
	}
	if err := ga.EndAccess(s.Refs[0]); err != nil {
		t.Fatal(err)
	}
	if err := ga.EndAccess(s.Refs[0]); !errors.Is(err, gnttab.ErrNotGranted) {
		t.Fatalf("second end access: %v", err)
	}
	// Unshare takes an ended grant as ended.
	if err := ga.Unshare(s); err != nil {
		t.Fatal(err)
	}
	// The grant is gone: mapping it again fails.
	if _, err := gb.Map(1, s.Refs, false); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("map after end access: %v", err)
	}
}

func TestGrantReadOnly(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	gb := gnttab.Open(e.dom(t, 2, DomainConfig{}))
	s := shareTo(t, ga, 2, false)
	_, err := gb.Map(1, s.Refs, true)
	var se *gnttab.StatusError
	if !errors.As(err, &se) || se.Status != abi.GNTST_general_error || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("writable map of a read-only grant: %v", err)
	}
	m, err := gb.Map(1, s.Refs, false)
	if err != nil {
		t.Fatal(err)
	}
	if f := ga.Entry(s.Refs[0]).Flags; f&abi.GTF_reading == 0 || f&abi.GTF_writing != 0 {
		t.Fatalf("flags while mapped ro: %#x", f)
	}
	s.Bytes()[7] = 42
	if m.Bytes()[7] != 42 {
		t.Fatal("read-only mapping is not the page")
	}
	if err := gb.CopyTo(1, s.Refs[0], 0, []byte("x")); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("copy into a read-only grant: %v", err)
	}
	gb.Unmap(m)
}

// TestGrantReadOnlyDescriptor checks the agent side directly: the page of
// a read-only map arrives as a descriptor that cannot be mapped writable.
func TestGrantReadOnlyDescriptor(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	f, err := e.h.AddDomain(2, DomainConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, f)
	defer c.Close()
	s := shareTo(t, ga, 2, false)
	r, fds := call(t, c, hypercall.Msg{ID: 1, Op: hypercall.OpGnttabMap, Dom: 1, Ref: uint32(s.Refs[0]), Flags: abi.GNTMAP_readonly})
	if r.Status != 0 || len(fds) != 1 {
		t.Fatalf("map: %+v fds %v", r, fds)
	}
	defer unix.Close(fds[0])
	if _, err := shm.Map(fds[0], abi.PAGE_SIZE, true); !errors.Is(err, unix.EACCES) {
		t.Fatalf("writable mmap of a read-only grant's page: %v", err)
	}
}

// TestKeptDescriptorAfterEndAccess: a mapper that keeps the page's
// descriptor after unmapping sees nothing the granter writes once it has
// ended the grant, while the granter keeps its bytes at the same address
// and can grant the frame again.
func TestKeptDescriptorAfterEndAccess(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	f, err := e.h.AddDomain(2, DomainConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, f) // dom2 speaks the protocol itself, and keeps what it gets
	defer c.Close()
	gc := gnttab.Open(e.dom(t, 3, DomainConfig{}))
	p, err := ga.AllocPages(1, gnttab.NoNotify, gnttab.NoNotify)
	if err != nil {
		t.Fatal(err)
	}
	page := p.Bytes()
	copy(page, "before")
	ref, err := ga.GrantAccess(2, p.Frames[0], false)
	if err != nil {
		t.Fatal(err)
	}
	r, fds := call(t, c, hypercall.Msg{ID: 1, Op: hypercall.OpGnttabMap, Dom: 1, Ref: uint32(ref)})
	if r.Status != 0 || len(fds) != 1 {
		t.Fatalf("map: %+v fds %v", r, fds)
	}
	kept := fds[0]
	defer unix.Close(kept)
	peek := func() string {
		b := make([]byte, 6)
		if _, err := unix.Pread(kept, b, 0); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := peek(); got != "before" {
		t.Fatalf("mapper sees %q", got)
	}
	// A second grant of the frame, mapped: ending the first leaves the
	// frame shared, as it still is.
	ref3, err := ga.GrantAccess(3, p.Frames[0], true)
	if err != nil {
		t.Fatal(err)
	}
	m3, err := gc.Map(1, []gnttab.Ref{ref3}, false)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := call(t, c, hypercall.Msg{ID: 2, Op: hypercall.OpGnttabUnmap, Handle: r.Handle}); r.Errno != 0 || r.Status != 0 {
		t.Fatalf("unmap: %+v", r)
	}
	if err := ga.EndAccess(ref); err != nil {
		t.Fatal(err)
	}
	copy(page, "shared")
	if got := peek(); got != "shared" {
		t.Fatalf("with dom3 still mapping, the frame changed: the old page shows %q", got)
	}
	if err := gc.Unmap(m3); err != nil {
		t.Fatal(err)
	}
	if err := ga.EndAccess(ref3); err != nil {
		t.Fatal(err)
	}
	copy(page, "secret")
	if got := peek(); got != "shared" {
		t.Fatalf("the kept descriptor shows %q after the grants ended", got)
	}
	if string(page[:6]) != "secret" {
		t.Fatalf("granter's page shows %q", page[:6])
	}
	// Granted again, the frame is the new page.
	ref3, err = ga.GrantAccess(3, p.Frames[0], true)
	if err != nil {
		t.Fatal(err)
	}
	m3, err = gc.Map(1, []gnttab.Ref{ref3}, false)
	if err != nil {
		t.Fatal(err)
	}
	if string(m3.Bytes()[:6]) != "secret" {
		t.Fatalf("granted again, the frame shows %q", m3.Bytes()[:6])
	}
	gc.Unmap(m3)
	if err := ga.EndAccess(ref3); err != nil {
		t.Fatal(err)
	}
	if err := ga.FreePages(p); err != nil {
		t.Fatal(err)
	}
}

func TestGrantCopy(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	gb := gnttab.Open(e.dom(t, 2, DomainConfig{}))
	gc := gnttab.Open(e.dom(t, 3, DomainConfig{}))
	s := shareTo(t, ga, 2, true)
	if err := gb.CopyTo(1, s.Refs[0], 4090, []byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	if string(s.Bytes()[4090:]) != "abcdef" {
		t.Fatalf("copy to: %q", s.Bytes()[4090:])
	}
	got := make([]byte, 3)
	if err := gb.CopyFrom(got, 1, s.Refs[0], 4091); err != nil || string(got) != "bcd" {
		t.Fatalf("copy from: %q %v", got, err)
	}
	if err := gb.CopyTo(1, s.Refs[0], 4095, []byte("xy")); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("copy across the page end: %v", err)
	}
	// Both sides are checked: the grant is not for dom 3.
	if err := gc.CopyFrom(got, 1, s.Refs[0], 0); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("copy through someone else's grant: %v", err)
	}
	// Neither may it name another domain's frame directly.
	op := abi.GnttabCopy{Source: abi.GnttabCopyPtr{U: uint64(s.Pages.Frames[0]), Domid: 1},
		Dest: abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: abi.DOMID_SELF}, Len: 4}
	if _, err := gc.Copy(op, nil); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("copy from another domain's frame: %v", err)
	}
	if f := ga.Entry(s.Refs[0]).Flags; f&(abi.GTF_reading|abi.GTF_writing) != 0 {
		t.Fatalf("copy left the grant pinned: %#x", f)
	}
}

func TestGrantRevokedOnDeath(t *testing.T) {
	e := newEnv(t)
	ga := gnttab.Open(e.dom(t, 1, DomainConfig{}))
	cb := e.dom(t, 2, DomainConfig{})
	gb := gnttab.Open(cb)
	eb := openEvt(t, cb)
	ea := openEvt(t, e.dom(t, 3, DomainConfig{}))
	_ = ea
	s := shareTo(t, ga, 2, true)
	m, err := gb.Map(1, s.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	_ = eb
	e.h.RemoveDomain(1)
	deadline := time.Now().Add(5 * time.Second)
	for !m.Revoked() {
		if time.Now().After(deadline) {
			t.Fatal("mapper not told of the revocation")
		}
		time.Sleep(time.Millisecond)
	}
	if len(e.h.Mappings(2)) != 0 {
		t.Fatal("agent still tracks the mapping")
	}
	m.Bytes()[0] = 1 // still mapped, harmlessly
	if err := gb.Unmap(m); err != nil {
		t.Fatal(err)
	}
}

func TestUnmapNotify(t *testing.T) {
	e := newEnv(t)
	ca, cb := e.dom(t, 1, DomainConfig{}), e.dom(t, 2, DomainConfig{})
	ga, gb := gnttab.Open(ca), gnttab.Open(cb)
	a, b := openEvt(t, ca), openEvt(t, cb)
	pa, pb := bindPair(t, a, b)
	s := shareTo(t, ga, 2, true)
	s.Bytes()[10] = 1
	m, err := gb.MapNotify(1, s.Refs[0], true, 10, uint32(pb))
	if err != nil {
		t.Fatal(err)
	}
	_ = m
	// The mapper dies: the agent clears the byte and kicks the granter.
	e.h.RemoveDomain(2)
	if p, err := a.Wait(5 * time.Second); err != nil || p != pa {
		t.Fatalf("no unmap notification: %v %v", p, err)
	}
	if s.Bytes()[10] != 0 {
		t.Fatal("notify byte not cleared")
	}
	if err := ga.Unshare(s); err != nil {
		t.Fatal(err)
	}
}

// call sends one raw request and reads the reply.
func call(t *testing.T, c *net.UnixConn, m hypercall.Msg, fds ...int) (hypercall.Msg, []int) {
	t.Helper()
	if err := shm.SendMsg(c, m.Append(nil), fds...); err != nil {
		t.Fatal(err)
	}
	return recv(t, c)
}

func recv(t *testing.T, c *net.UnixConn) (hypercall.Msg, []int) {
	t.Helper()
	buf := make([]byte, hypercall.MaxMsg)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, got, err := shm.RecvMsg(c, buf, hypercall.MaxFDs)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hypercall.Decode(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return r, got
}

// BenchmarkGrantEndAccess: a grant written and ended, its page never
// mapped; EndAccess still asks the agent whether the page went out.
func BenchmarkGrantEndAccess(b *testing.B) {
	e := newEnv(b)
	g := gnttab.Open(e.dom(b, 1, DomainConfig{}))
	p, err := g.AllocPages(1, gnttab.NoNotify, gnttab.NoNotify)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, err := g.GrantAccess(2, p.Frames[0], false)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.EndAccess(r); err != nil {
			b.Fatal(err)
		}
	}
}
