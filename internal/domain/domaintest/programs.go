package domaintest

// Domain programs: a test binary re-executed as a domain (see Main), on
// one host (internal/domain's tests) or several (internal/clustertest's).
// Each returns nil on success; the tests read the exit code.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
	gring "shi/guest/ring"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/domain"
	"shi/internal/hypercall"
	"shi/internal/ring"
	"shi/internal/shm"
)

const waitLong = 20 * time.Second

func init() {
	Register("pipe-duplex", pipeDuplex)
	Register("copy-src", copySrc)
	Register("copy-dst", copyDst)
	Register("copier", copier)
	Register("pong", pong)
	Register("ping", ping)
	Register("evt-recv", evtRecv)
	Register("evt-send", evtSend)
	Register("ring-front", ringFront)
	Register("ring-back", ringBack)
	Register("granter", granter)
	Register("mapper", mapper)
	Register("survivor", survivor)
	Register("binder", binder)
	Register("victim", victim)
	Register("hostile", hostile)
	Register("crash-once", crashOnce)
	Register("sleeper", sleeper)
	Register("whoami", whoami)
}

func me() abi.DomID {
	n, _ := strconv.Atoi(os.Getenv("SHI_DOMID"))
	return abi.DomID(n)
}

func envDom(name string) abi.DomID {
	n, _ := strconv.Atoi(os.Getenv(name))
	return abi.DomID(n)
}

// waitDomid reads a domid from path, waiting for it.
func waitDomid(c *xs.Client, path string) (abi.DomID, error) {
	d, err := WaitDomid(c, path, waitLong)
	return abi.DomID(d), err
}

func home(d abi.DomID) string { return fmt.Sprintf("/local/domain/%d", d) }

// publish writes ~/data/key = value readable by reader.
func publish(c *xs.Client, key, value string, reader abi.DomID) error {
	p := home(me()) + "/data/" + key
	return c.Transaction(func(t *xs.Tx) error {
		if err := t.Write(p, []byte(value)); err != nil {
			return err
		}
		return t.SetPerms(p, xs.Perm{Domid: uint32(me())}, xs.Perm{Domid: uint32(reader), Access: xs.AccessRead})
	})
}

func readNum(c *xs.Client, path string) (uint32, error) {
	v, err := WaitRead(c, path, waitLong)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(v), 10, 32)
	return uint32(n), err
}

// peerNums waits for the peer named in ~/data/peer and reads the numbers
// it published under the keys.
func peerNums(c *xs.Client, keys ...string) (abi.DomID, []uint32, error) {
	peer, err := waitDomid(c, home(me())+"/data/peer")
	if err != nil {
		return 0, nil, err
	}
	nums := make([]uint32, len(keys))
	for i, k := range keys {
		if nums[i], err = readNum(c, home(peer)+"/data/"+k); err != nil {
			return 0, nil, err
		}
	}
	return peer, nums, nil
}

// serveBound allocates a port for the peer named in ~/data/peer and
// publishes it as ~/data/port.
func serveBound(c *xs.Client, e *evtchn.Handle) (peer abi.DomID, p evtchn.Port, err error) {
	peer, err = waitDomid(c, home(me())+"/data/peer")
	if err != nil {
		return
	}
	if p, err = e.AllocUnbound(peer); err != nil {
		return
	}
	err = publish(c, "port", strconv.Itoa(int(p)), peer)
	return
}

// bindTo binds to the port peer published, consuming the initial event.
func bindTo(c *xs.Client, e *evtchn.Handle, peer abi.DomID) (evtchn.Port, error) {
	rp, err := readNum(c, home(peer)+"/data/port")
	if err != nil {
		return 0, err
	}
	p, err := e.BindInterdomain(peer, evtchn.Port(rp))
	if err != nil {
		return 0, err
	}
	if got, err := e.Wait(waitLong); err != nil || got != p {
		return 0, fmt.Errorf("new port not pending: %v %v", got, err)
	}
	return p, e.Unmask(p)
}

func openDomain() (*xs.Client, *evtchn.Handle, error) {
	c, err := xs.OpenEnv()
	if err != nil {
		return nil, nil, err
	}
	e, err := evtchn.OpenSelf()
	return c, e, err
}

func rounds() int {
	n, err := strconv.Atoi(os.Getenv("ROUNDS"))
	if err != nil {
		return 100
	}
	return n
}

func pong() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	_, p, err := serveBound(c, e)
	if err != nil {
		return err
	}
	for i := range rounds() {
		got, err := e.Wait(waitLong)
		if err != nil || got != p {
			return fmt.Errorf("round %d: %v %v", i, got, err)
		}
		e.Unmask(p)
		if err := e.Notify(p); err != nil {
			return err
		}
	}
	return nil
}

func ping() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	p, err := bindTo(c, e, envDom("PEER"))
	if err != nil {
		return err
	}
	for i := range rounds() {
		if err := e.Notify(p); err != nil {
			return err
		}
		got, err := e.Wait(waitLong)
		if err != nil || got != p {
			return fmt.Errorf("round %d: %v %v", i, got, err)
		}
		e.Unmask(p)
	}
	return nil
}

// evtRecv checks coalescing and masking on the receiving side.
func evtRecv() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer, p, err := serveBound(c, e)
	if err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/sent1", waitLong); err != nil {
		return err
	}
	// Ten sends, one event.
	if got, err := e.Pending(); err != nil || got != p {
		return fmt.Errorf("after 10 sends: %v %v", got, err)
	}
	if _, err := e.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		return fmt.Errorf("10 sends gave a second event: %v", err)
	}
	e.Unmask(p)
	if _, err := e.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		return fmt.Errorf("drained port fired again: %v", err)
	}
	// Masked: the send makes it pending but the fd stays quiet.
	if err := e.Mask(p); err != nil {
		return err
	}
	if err := publish(c, "masked", "1", peer); err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/sent2", waitLong); err != nil {
		return err
	}
	if _, err := e.Pending(); !errors.Is(err, evtchn.ErrNoEvent) {
		return fmt.Errorf("masked port fired: %v", err)
	}
	if pend, _ := e.IsPending(p); !pend {
		return errors.New("masked port not pending")
	}
	if err := e.Unmask(p); err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(e.Fd()), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 1000); n != 1 {
		return errors.New("unmask did not deliver the pending event")
	}
	if got, err := e.Pending(); err != nil || got != p {
		return fmt.Errorf("after unmask: %v %v", got, err)
	}
	return nil
}

func evtSend() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer := envDom("PEER")
	p, err := bindTo(c, e, peer)
	if err != nil {
		return err
	}
	for range 10 {
		if err := e.Notify(p); err != nil {
			return err
		}
	}
	if err := publish(c, "sent1", "1", peer); err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/masked", waitLong); err != nil {
		return err
	}
	if err := e.Notify(p); err != nil {
		return err
	}
	if err := publish(c, "sent2", "1", peer); err != nil {
		return err
	}
	return waitGone(c, home(peer)+"/data/masked") // our home must outlive the peer's last read
}

// waitGone waits until the domain owning node (which we could read) has
// been released: its nodes went with it.
func waitGone(c *xs.Client, node string) error {
	w, err := c.Watch(node, "gone") // fires when its domain is removed
	if err != nil {
		return err
	}
	defer c.Unwatch(w)
	deadline := time.After(waitLong)
	for {
		if _, err := c.Read(node); err != nil {
			return nil
		}
		select {
		case <-w.Events():
		case <-deadline:
			return fmt.Errorf("%s still there", node)
		}
	}
}

// ringRequests is how many requests the ring programs exchange: REQUESTS,
// default 1000.
func ringRequests() int { return envInt("REQUESTS", 1000) }

// share opens the domain's grant table and grants n pages to dom.
func share(dom abi.DomID, n int, writable bool) (*gnttab.Handle, *gnttab.Share, error) {
	g, err := gnttab.OpenSelf()
	if err != nil {
		return nil, nil, err
	}
	s, err := g.SharePages(dom, n, writable)
	if err != nil {
		return nil, nil, err
	}
	return g, s, nil
}

// envInt reads a number from the environment.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// ringFront shares a ring page with PEER and sends requests through it.
func ringFront() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer := envDom("PEER")
	_, s, err := share(peer, 1, true)
	if err != nil {
		return err
	}
	p, err := e.AllocUnbound(peer)
	if err != nil {
		return err
	}
	f, err := gring.NewFront(s.Bytes(), 16, e, p)
	if err != nil {
		return err
	}
	if err := publish(c, "ring-ref", strconv.Itoa(int(s.Refs[0])), peer); err != nil {
		return err
	}
	if err := publish(c, "port", strconv.Itoa(int(p)), peer); err != nil {
		return err
	}
	sent, got, requests := 0, 0, ringRequests()
	deadline := time.Now().Add(waitLong)
	for got < requests {
		deadline = time.Now().Add(waitLong) // per batch: long runs are long
		for sent < requests && !f.Full() {
			req := f.NextRequest()
			putU64(req, uint64(sent))
			putU64(req[8:], uint64(sent)+1000)
			sent++
		}
		if err := f.Push(); err != nil {
			return err
		}
		if err := f.WaitResponses(deadline); err != nil {
			return fmt.Errorf("after %d responses: %w", got, err)
		}
		for {
			rsp, err := f.NextResponse()
			if err != nil {
				return err
			}
			if rsp == nil {
				break
			}
			if id, v := getU64(rsp), getU64(rsp[8:]); id != uint64(got) || v != id+2000 {
				return fmt.Errorf("response %d: %d %d", got, id, v)
			}
			got++
		}
	}
	return nil
}

func ringBack() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer, nums, err := peerNums(c, "ring-ref", "port")
	if err != nil {
		return err
	}
	ref, rp := nums[0], nums[1]
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	m, err := g.Map(peer, []gnttab.Ref{gnttab.Ref(ref)}, true)
	if err != nil {
		return err
	}
	p, err := e.BindInterdomain(peer, evtchn.Port(rp))
	if err != nil {
		return err
	}
	b, err := gring.NewBack(m.Bytes(), 16, e, p)
	if err != nil {
		return err
	}
	for served, requests := 0, ringRequests(); served < requests; {
		if err := b.WaitRequests(time.Now().Add(waitLong)); err != nil {
			return err
		}
		for {
			req, err := b.NextRequest()
			if err != nil {
				return err
			}
			if req == nil {
				break
			}
			id, v := getU64(req), getU64(req[8:])
			rsp := b.NextResponse()
			putU64(rsp, id)
			putU64(rsp[8:], v+1000)
			served++
		}
		if err := b.Push(); err != nil {
			return err
		}
	}
	return g.Unmap(m)
}

func putU64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

func getU64(b []byte) (v uint64) {
	for i := range 8 {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// granter checks that ending access to a mapped grant fails until the
// mapper unmaps it. The mapper's write reaches it with an event, as Xen
// drivers signal: across hosts the page is coherent at events
// (DESIGN.md §3), not at XenStore writes.
func granter() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer := envDom("PEER")
	g, s, err := share(peer, 1, true)
	if err != nil {
		return err
	}
	copy(s.Bytes(), "hello from the granter")
	ro, err := g.GrantAccess(peer, s.Pages.Frames[0], true)
	if err != nil {
		return err
	}
	p, err := e.AllocUnbound(peer)
	if err != nil {
		return err
	}
	if err := publish(c, "ref", strconv.Itoa(int(s.Refs[0])), peer); err != nil {
		return err
	}
	if err := publish(c, "ro-ref", strconv.Itoa(int(ro)), peer); err != nil {
		return err
	}
	if err := publish(c, "port", strconv.Itoa(int(p)), peer); err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/mapped", waitLong); err != nil {
		return err
	}
	if f := g.Entry(s.Refs[0]).Flags; f&(abi.GTF_reading|abi.GTF_writing) != abi.GTF_reading|abi.GTF_writing {
		return fmt.Errorf("flags while mapped: %#x", f)
	}
	if f := g.Entry(ro).Flags; f&abi.GTF_reading == 0 || f&abi.GTF_writing != 0 {
		return fmt.Errorf("read-only grant flags while mapped: %#x", f)
	}
	if err := waitFor(e, p, func() bool { return string(s.Bytes()[100:115]) == "mapper was here" }); err != nil {
		return fmt.Errorf("mapper's write not in our page: %q: %w", s.Bytes()[100:115], err)
	}
	if err := g.EndAccess(s.Refs[0]); !errors.Is(err, gnttab.ErrBusy) {
		return fmt.Errorf("end access while mapped: %v", err)
	}
	if err := publish(c, "tried", "1", peer); err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/unmapped", waitLong); err != nil {
		return err
	}
	// The unmaps went before the mapper's note; across hosts the grant is
	// unpinned once its fence is applied, which EndAccess does.
	if err := waitFor(e, p, func() bool { return g.EndAccess(ro) == nil }); err != nil {
		return fmt.Errorf("end access of the read-only grant after unmap: %w", err)
	}
	if f := g.Entry(s.Refs[0]).Flags; f&(abi.GTF_reading|abi.GTF_writing) != 0 {
		return fmt.Errorf("flags after unmap: %#x", f)
	}
	return g.Unshare(s)
}

// waitFor waits, taking events on p, until cond holds.
func waitFor(e *evtchn.Handle, p evtchn.Port, cond func() bool) error {
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		if got, err := e.Wait(100 * time.Millisecond); err == nil {
			e.Unmask(got)
		}
	}
	return nil
}

func mapper() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer, nums, err := peerNums(c, "ref", "ro-ref")
	if err != nil {
		return err
	}
	ref, ro := nums[0], nums[1]
	p, err := bindTo(c, e, peer)
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	if _, err := g.Map(peer, []gnttab.Ref{gnttab.Ref(ro)}, true); !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("writable map of a read-only grant: %v", err)
	}
	mro, err := g.Map(peer, []gnttab.Ref{gnttab.Ref(ro)}, false)
	if err != nil {
		return err
	}
	m, err := g.Map(peer, []gnttab.Ref{gnttab.Ref(ref)}, true)
	if err != nil {
		return err
	}
	if string(m.Bytes()[:5]) != "hello" || string(mro.Bytes()[:5]) != "hello" {
		return fmt.Errorf("mapped page shows %q", m.Bytes()[:22])
	}
	copy(m.Bytes()[100:], "mapper was here")
	if err := e.Notify(p); err != nil {
		return err
	}
	if err := publish(c, "mapped", "1", peer); err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/tried", waitLong); err != nil {
		return err
	}
	if err := g.Unmap(m); err != nil {
		return err
	}
	if err := g.Unmap(mro); err != nil {
		return err
	}
	if err := e.Notify(p); err != nil {
		return err
	}
	if err := publish(c, "unmapped", "1", peer); err != nil {
		return err
	}
	return waitGone(c, home(peer)+"/data/tried")
}

// survivor waits for its peer to die and sees its port go unbound.
func survivor() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer, p, err := serveBound(c, e)
	if err != nil {
		return err
	}
	if _, err := WaitRead(c, home(peer)+"/data/bound", waitLong); err != nil {
		return err
	}
	if err := publish(c, "waiting", "1", 0); err != nil {
		return err
	}
	got, err := e.Wait(waitLong)
	if err != nil || got != p {
		return fmt.Errorf("peer death not seen: %v %v", got, err)
	}
	st, err := e.Status(p)
	if err != nil {
		return err
	}
	if st.Status != abi.EVTCHNSTAT_unbound || st.RemoteDom != peer {
		return fmt.Errorf("status after the peer died: %+v", st)
	}
	return e.Notify(p) // dropped without error, as on any unbound port
}

func binder() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	peer := envDom("PEER")
	if _, err := bindTo(c, e, peer); err != nil {
		return err
	}
	if err := publish(c, "bound", "1", peer); err != nil {
		return err
	}
	select {} // until destroyed
}

// victim offers a grant and a port to somebody else, readable by all.
func victim() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	const other = 0x7000
	s, err := g.SharePages(other, 1, true)
	if err != nil {
		return err
	}
	copy(s.Bytes(), "secret")
	p, err := e.AllocUnbound(other)
	if err != nil {
		return err
	}
	for k, v := range map[string]string{"ref": strconv.Itoa(int(s.Refs[0])), "port": strconv.Itoa(int(p)), "secret": "s3cr3t"} {
		perms := []xs.Perm{{Domid: uint32(me()), Access: xs.AccessRead}} // everyone reads
		if k == "secret" {
			perms = []xs.Perm{{Domid: uint32(me())}} // nobody else
		}
		path := home(me()) + "/data/" + k
		if err := c.Write(path, []byte(v)); err != nil {
			return err
		}
		if err := c.SetPerms(path, perms...); err != nil {
			return err
		}
	}
	if err := c.Write(home(me())+"/data/ready", []byte("1")); err != nil {
		return err
	}
	if err := c.SetPerms(home(me())+"/data/ready", xs.Perm{Domid: uint32(me()), Access: xs.AccessRead}); err != nil {
		return err
	}
	// Until destroyed: nothing a hostile domain sends may change the page.
	for {
		e.Acquire()
		if string(s.Bytes()[:6]) != "secret" || !allZero(s.Bytes()[6:]) {
			return fmt.Errorf("the granted page changed: %q", s.Bytes()[:16])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// hostile tries what a domain must not be able to do; it succeeds (exit
// 0) only if every attempt is refused.
func hostile() error {
	victim := envDom("VICTIM")
	var errs []error
	refused := func(what string, err error, want ...syscall.Errno) {
		for _, w := range want {
			if errors.Is(err, w) {
				return
			}
		}
		errs = append(errs, fmt.Errorf("%s: got %v, want one of %v", what, err, want))
	}
	// Garbage on the agent connection, before the library uses it.
	if err := garbage(); err != nil {
		errs = append(errs, err)
	}
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	if _, err := WaitRead(c, home(victim)+"/data/ready", waitLong); err != nil {
		return err
	}
	ref, err := readNum(c, home(victim)+"/data/ref")
	if err != nil {
		return err
	}
	port, err := readNum(c, home(victim)+"/data/port")
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	_, err = g.Map(victim, []gnttab.Ref{gnttab.Ref(ref)}, false)
	refused("map a grant for someone else", err, syscall.EPERM)
	_, err = g.Map(victim, []gnttab.Ref{gnttab.Ref(ref + 1)}, false)
	refused("map an unused ref", err, syscall.EPERM)
	_, err = g.Map(victim, []gnttab.Ref{1 << 20}, false)
	refused("map past the table", err, syscall.EINVAL)
	buf := make([]byte, 6)
	refused("copy from a grant for someone else", g.CopyFrom(buf, victim, gnttab.Ref(ref), 0), syscall.EPERM)
	op := abi.GnttabCopy{Source: abi.GnttabCopyPtr{U: 0, Domid: victim}, Dest: abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: abi.DOMID_SELF}, Len: 6}
	_, err = g.Copy(op, nil)
	refused("copy the victim's frame 0", err, syscall.EPERM)
	_, err = e.BindInterdomain(victim, evtchn.Port(port))
	refused("bind a port offered to someone else", err, syscall.EINVAL)
	_, err = e.BindInterdomain(victim, evtchn.Port(port+1))
	refused("bind a port not offered", err, syscall.EINVAL)
	_, err = c.Read(home(victim) + "/data/secret")
	refused("read a private node", err, syscall.EACCES)
	refused("write into another's home", c.Write(home(victim)+"/data/evil", []byte("x")), syscall.EACCES)
	refused("rewrite its own name", c.Write(home(me())+"/name", []byte("root")), syscall.EACCES)
	refused("write into dom0's home", c.Write("/local/domain/0/evil", []byte("x")), syscall.EACCES)
	refused("remove /vm", c.Rm("/vm"), syscall.EACCES)
	refused("remove the victim's home", c.Rm(home(victim)), syscall.EACCES)
	_, err = c.Directory(home(victim))
	refused("list another's home", err, syscall.EACCES)
	// Across hosts it now has a link to the victim (its failed maps made
	// one): updates forged on it must change nothing.
	if err := forge(uint32(ref)); err != nil {
		errs = append(errs, err)
	}
	// Under a uid of its own (the agent is root), it cannot signal the
	// agent nor read its memory or descriptors through /proc.
	var agent syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d", os.Getppid()), &agent); err == nil && agent.Uid == 0 && os.Getuid() < domain.DomainUIDBase {
		errs = append(errs, fmt.Errorf("runs as uid %d beside a root agent, not under a uid of its own", os.Getuid()))
	}
	if os.Getuid() >= domain.DomainUIDBase {
		if err := syscall.Kill(os.Getppid(), 0); !errors.Is(err, syscall.EPERM) {
			errs = append(errs, fmt.Errorf("signal the agent: got %v, want EPERM", err))
		}
		if _, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", os.Getppid())); err == nil {
			errs = append(errs, errors.New("read the agent's environment through /proc"))
		}
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", os.Getppid())); err == nil {
			errs = append(errs, errors.New("looked into the agent's descriptors through /proc"))
		}
	}
	// The agent's API (create, destroy, forwarded commits) is out of
	// reach: a domain has a network namespace of its own.
	if u := os.Getenv("SHI_AGENT"); u != "" {
		hc := &http.Client{Timeout: 2 * time.Second}
		if resp, err := hc.Get(u + "/v1/domains"); err == nil {
			resp.Body.Close()
			errs = append(errs, fmt.Errorf("reached the agent's API at %s", u))
		}
	}
	return errors.Join(errs...)
}

// forge writes update frames (guest/link's format) for ref on every TCP
// socket the domain holds, as a hostile library would on its links: the
// victim must refuse them all. Then garbage, which makes the victim drop
// the link. It does nothing on one host (no links).
func forge(ref uint32) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	frame := func(typ, dir byte, ref, gen uint32, payload []byte) []byte {
		b := []byte{typ, dir, 0, 0}
		b = binary.LittleEndian.AppendUint32(b, ref)
		b = binary.LittleEndian.AppendUint32(b, gen)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
		return append(b, payload...)
	}
	run := append(binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 0), 4), "EVIL"...)
	commit := frame(5, 0, 0, 0, nil)
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || (dom != unix.AF_INET && dom != unix.AF_INET6) {
			continue
		}
		for gen := uint32(0); gen < 8; gen++ {
			for _, dir := range []byte{1, 2} {
				unix.Write(fd, append(frame(2, dir, ref, gen, run), commit...))
			}
			unix.Write(fd, append(frame(3, 0, ref, gen, nil), commit...)) // a bad page frame
		}
		unix.Write(fd, []byte{99, 99, 99, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	}
	return nil
}

// garbage sends malformed requests on a duplicate of the agent
// connection and checks that each gets an error reply.
func garbage() error {
	fd, err := unix.FcntlInt(3, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	conn, err := shm.FileConn(fd)
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, hypercall.MaxMsg)
	ev, _ := shm.NewEventFD()
	defer ev.Close()
	for i, msg := range [][]byte{
		{1, 2, 3},
		[]byte("\xff\xff\xff\xffthis is not a hypercall at all, no sir, not one bit of it"),
		(&hypercall.Msg{ID: 77, Op: 4242}).Append(nil),
		(&hypercall.Msg{ID: 78, Op: hypercall.OpGnttabCopy, Data: []byte{1}}).Append(nil),
		make([]byte, hypercall.MaxMsg+1),
	} {
		fds := []int{}
		if i == 2 {
			fds = []int{ev.Fd(), ev.Fd(), ev.Fd()}
		}
		if err := shm.SendMsg(conn, msg, fds...); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(waitLong))
		n, got, err := shm.RecvMsg(conn, buf, hypercall.MaxFDs)
		if err != nil {
			return fmt.Errorf("garbage %d: %w", i, err)
		}
		for _, fd := range got {
			unix.Close(fd)
		}
		r, err := hypercall.Decode(buf[:n])
		if err != nil || r.Errno == 0 {
			return fmt.Errorf("garbage %d: reply %+v %v", i, r, err)
		}
	}
	return nil
}

// crashOnce crashes the first time (no marker file yet), then runs.
func crashOnce() error {
	marker := os.Getenv("MARKER")
	if _, err := os.Stat(marker); err != nil {
		os.WriteFile(marker, nil, 0o600)
		os.Exit(3)
	}
	select {}
}

func sleeper() error { select {} }

// whoami checks that XenStore knows it as itself, and that a child in a
// session of its own is still taken for it.
func whoami() error {
	c, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	id, err := c.Read("domid") // relative: its own home
	if err != nil {
		return err
	}
	if string(id) != os.Getenv("SHI_DOMID") {
		return fmt.Errorf("relative domid reads %q, want %q", id, os.Getenv("SHI_DOMID"))
	}
	if err := c.Write("data/hello", []byte("x")); err != nil {
		return err
	}
	if err := c.Write("/local/domain/0/data/x", []byte("x")); !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("write as dom0 allowed: %v", err)
	}
	if os.Getenv("CHILD") != "" {
		return nil
	}
	self, _ := hv.Self()
	if self == nil || self.DomID() != me() {
		return errors.New("agent connection reports another domid")
	}
	cmd := exec.Command("/proc/self/exe") // the domain may not see its own path (its own uid)
	cmd.Env = append(os.Environ(), "CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("child in its own session: %v: %s", err, out)
	}
	return nil
}

// pipeDuplex streams TOTAL bytes (default 64 MiB) of pseudo-random data to
// its peer through a pipe in PAGES granted pages (default 64) while it
// reads the peer's stream through the peer's pipe, both at once, in
// random chunk sizes, and checks every byte: the peer's stream is the
// same generator seeded with the peer's id. With EXPECT_GONE set, the
// peer is expected to vanish mid-stream: seeing it gone (not a hang) is
// success.
func pipeDuplex() error {
	c, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	peer, err := waitPeer(c)
	if err != nil {
		return err
	}
	total, pages := int64(envInt("TOTAL", 64<<20)), envInt("PAGES", 64)
	out, err := evtchn.OpenSelf() // each pipe wants a handle of its own
	if err != nil {
		return err
	}
	in, err := evtchn.OpenSelf()
	if err != nil {
		return err
	}
	g, s, err := share(peer, 1+pages, true)
	if err != nil {
		return err
	}
	pOut, err := out.AllocUnbound(peer)
	if err != nil {
		return err
	}
	w, err := gring.NewPipeWriter(s.Bytes(), out, pOut)
	if err != nil {
		return err
	}
	var refs []string
	for _, r := range s.Refs {
		refs = append(refs, strconv.Itoa(int(r)))
	}
	if err := publish(c, "pipe-refs", strings.Join(refs, " "), peer); err != nil {
		return err
	}
	if err := publish(c, "pipe-port", strconv.Itoa(int(pOut)), peer); err != nil {
		return err
	}
	v, err := WaitRead(c, home(peer)+"/data/pipe-refs", waitLong)
	if err != nil {
		return err
	}
	var peerRefs []gnttab.Ref
	for _, f := range strings.Fields(string(v)) {
		n, _ := strconv.Atoi(f)
		peerRefs = append(peerRefs, gnttab.Ref(n))
	}
	m, err := g.Map(peer, peerRefs, true)
	if err != nil {
		return err
	}
	rp, err := readNum(c, home(peer)+"/data/pipe-port")
	if err != nil {
		return err
	}
	pIn, err := in.BindInterdomain(peer, evtchn.Port(rp))
	if err != nil {
		return err
	}
	r, err := gring.NewPipeReader(m.Bytes(), in, pIn)
	if err != nil {
		return err
	}
	gone := os.Getenv("EXPECT_GONE") != ""
	mine, theirs := newGen(me()), newGen(peer)
	Stuck = func() string {
		ctl := func(b []byte) string {
			return fmt.Sprintf("cons %d prod %d readwait %d writwait %d closed %d", ring.Load32(b, 0), ring.Load32(b, 4),
				ring.Load32(b, 8), ring.Load32(b, 12), ring.Load32(b, 16))
		}
		return "out pipe: " + ctl(s.Bytes()) + "\nin pipe: " + ctl(m.Bytes())
	}
	werr := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(uint64(me()), 7)) // chunk sizes
		buf := make([]byte, 256<<10)
		for left := total; left > 0; {
			n := 1 + rng.IntN(int(min(left, int64(len(buf)))))
			mine.next(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				werr <- err
				return
			}
			left -= int64(n)
		}
		werr <- w.Close()
	}()
	rng := rand.New(rand.NewPCG(uint64(peer), 5)) // read sizes
	want := make([]byte, 256<<10)
	buf := make([]byte, 200<<10)
	var got int64
	for {
		k := 1 + rng.IntN(len(buf))
		n, err := r.Read(buf[:k])
		if err == io.EOF {
			break
		}
		if gone && errors.Is(err, gring.ErrPeerGone) {
			return publish(c, "saw-gone", "1", 0)
		}
		if err != nil {
			return fmt.Errorf("read at %d: %w", got, err)
		}
		if err := theirs.check(buf[:n], want, &got); err != nil {
			return err
		}
	}
	if gone {
		return errors.New("the stream ended; the peer was to vanish")
	}
	if got != total {
		return fmt.Errorf("read %d bytes of %d", got, total)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := publish(c, "pipe-done", "1", peer); err != nil {
		return err
	}
	// The peer may still read our stream: leave when it is done (on a
	// loaded machine it may be far behind).
	if err := waitDone(c, peer, "pipe-done", in, pIn); err != nil {
		return err
	}
	return g.Unmap(m)
}

// waitDone waits until peer has published key or is gone (its end of
// port p of h closed): a peer that saw our own key first may leave before
// we look, and its nodes go with it.
func waitDone(c *xs.Client, peer abi.DomID, key string, h *evtchn.Handle, p evtchn.Port) error {
	path := home(peer) + "/data/" + key
	deadline := time.Now().Add(5 * waitLong)
	for !h.PeerGone(p) {
		if _, err := c.Read(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v: %w", path, 5*waitLong, ErrTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// streamGen makes domain d's stream: the same bytes on both sides, so
// the reader checks every one.
type streamGen struct{ rng *rand.Rand }

func newGen(d abi.DomID) *streamGen { return &streamGen{rand.New(rand.NewPCG(uint64(d), 11))} }

func (g *streamGen) next(b []byte) {
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
}

// check compares b with the next bytes of the peer's stream.
func (g *streamGen) check(b, scratch []byte, got *int64) error {
	w := scratch[:len(b)]
	g.next(w)
	if !bytes.Equal(b, w) {
		for i := range b {
			if b[i] != w[i] {
				return fmt.Errorf("stream corrupt at byte %d", *got+int64(i))
			}
		}
	}
	*got += int64(len(b))
	return nil
}

// waitPeer reads the peer's id: PEER, or ~/data/peer.
func waitPeer(c *xs.Client) (abi.DomID, error) {
	if os.Getenv("PEER") != "" {
		return envDom("PEER"), nil
	}
	return waitDomid(c, home(me())+"/data/peer")
}

// copySrc shares a page holding "from the source" with its peer, the
// copier.
func copySrc() error {
	c, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	copier, err := waitPeer(c)
	if err != nil {
		return err
	}
	_, s, err := share(copier, 1, false)
	if err != nil {
		return err
	}
	copy(s.Bytes()[64:], "from the source")
	if err := publish(c, "ref", strconv.Itoa(int(s.Refs[0])), copier); err != nil {
		return err
	}
	_, err = WaitRead(c, home(copier)+"/data/copied", waitLong)
	return err
}

// copyDst shares a writable page with its peer, the copier, and waits
// for its event, then checks what it copied into it.
func copyDst() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	copier, err := waitPeer(c)
	if err != nil {
		return err
	}
	_, s, err := share(copier, 1, true)
	if err != nil {
		return err
	}
	p, err := e.AllocUnbound(copier)
	if err != nil {
		return err
	}
	if err := publish(c, "ref", strconv.Itoa(int(s.Refs[0])), copier); err != nil {
		return err
	}
	if err := publish(c, "port", strconv.Itoa(int(p)), copier); err != nil {
		return err
	}
	// The copier's event says it is done (and bound: leaving before would
	// fail its bind); the copy itself was written into our page by our
	// host, the granter's.
	got, err := e.Wait(waitLong)
	if err != nil || got != p {
		return fmt.Errorf("no event from the copier: %v %v", got, err)
	}
	if string(s.Bytes()[128:143]) != "from the source" {
		return fmt.Errorf("page holds %q", s.Bytes()[128:143])
	}
	return nil
}

// copier copies between grants of two domains of two other hosts with
// one GNTTABOP_copy (both sides grants), then tells the destination.
func copier() error {
	c, e, err := openDomain()
	if err != nil {
		return err
	}
	src, dst := envDom("SRC"), envDom("DST")
	sref, err := readNum(c, home(src)+"/data/ref")
	if err != nil {
		return err
	}
	dref, err := readNum(c, home(dst)+"/data/ref")
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	op := abi.GnttabCopy{
		Source: abi.GnttabCopyPtr{U: uint64(sref), Domid: src, Offset: 64},
		Dest:   abi.GnttabCopyPtr{U: uint64(dref), Domid: dst, Offset: 128},
		Len:    15, Flags: abi.GNTCOPY_source_gref | abi.GNTCOPY_dest_gref,
	}
	if _, err := g.Copy(op, nil); err != nil {
		return err
	}
	p, err := bindTo(c, e, dst)
	if err != nil {
		return err
	}
	if err := e.Notify(p); err != nil {
		return err
	}
	if err := publish(c, "copied", "1", src); err != nil {
		return err
	}
	return waitGone(c, home(src)+"/data/ref") // until the source has seen it
}
