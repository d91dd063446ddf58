package hypervisor

import (
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/gnttab"
	"shi/internal/abi"
	"shi/internal/hypercall"
	"shi/internal/shm"
)

// TestHostileRequests sends what a hostile domain might on its agent
// connection; each gets an error reply and a log line naming the domain,
// and the agent goes on serving it and others.
func TestHostileRequests(t *testing.T) {
	e := newEnv(t)
	good := gnttab.Open(e.dom(t, 1, DomainConfig{Name: "good"}))
	f, err := e.h.AddDomain(6, DomainConfig{Name: "evil", MaxPages: 2})
	if err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, f)
	defer c.Close()

	expectErr := func(name string, want syscall.Errno, b []byte, fds ...int) {
		t.Helper()
		if err := shm.SendMsg(c, b, fds...); err != nil {
			t.Fatalf("%s: send: %v", name, err)
		}
		r, got := recv(t, c)
		closeFDs(got)
		if len(b) >= 4 && r.ID != binary.LittleEndian.Uint32(b) {
			t.Fatalf("%s: reply id %d", name, r.ID)
		}
		if syscall.Errno(r.Errno) != want || len(got) != 0 {
			t.Fatalf("%s: errno %v fds %d, want %v", name, syscall.Errno(r.Errno), len(got), want)
		}
	}
	msg := func(m hypercall.Msg) []byte { return m.Append(nil) }

	expectErr("short", syscall.EINVAL, []byte{7, 0, 0, 0, 1})
	expectErr("one byte", syscall.EINVAL, []byte{1})
	expectErr("too long", syscall.EINVAL, make([]byte, hypercall.MaxMsg+100))
	expectErr("unknown op", syscall.ENOSYS, msg(hypercall.Msg{ID: 3, Op: 999}))
	expectErr("notification op", syscall.ENOSYS, msg(hypercall.Msg{ID: 3, Op: hypercall.NotifyEvtchnConnect}))
	ev, _ := shm.NewEventFD()
	defer ev.Close()
	expectErr("fd on a send", syscall.EINVAL, msg(hypercall.Msg{ID: 4, Op: hypercall.OpEvtchnSend, Port: 1}), ev.Fd())
	expectErr("three fds", syscall.EINVAL, msg(hypercall.Msg{ID: 5, Op: hypercall.OpGnttabSharePage}), ev.Fd(), ev.Fd(), ev.Fd())
	expectErr("eventfd as a page", syscall.EINVAL, msg(hypercall.Msg{ID: 6, Op: hypercall.OpGnttabSharePage}), ev.Fd())
	unsealed, _ := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
	unix.Ftruncate(unsealed, abi.PAGE_SIZE)
	defer unix.Close(unsealed)
	expectErr("unsealed memfd", syscall.EINVAL, msg(hypercall.Msg{ID: 7, Op: hypercall.OpGnttabSharePage}), unsealed)
	big, _ := shm.NewMemfd("big", 2*abi.PAGE_SIZE)
	defer big.Close()
	expectErr("two-page memfd", syscall.EINVAL, msg(hypercall.Msg{ID: 8, Op: hypercall.OpGnttabSharePage}), big.Fd())
	expectErr("share without a page", syscall.EINVAL, msg(hypercall.Msg{ID: 9, Op: hypercall.OpGnttabSharePage}))
	for i := range 2 { // its memory is two pages
		p, _ := shm.NewMemfd("p", abi.PAGE_SIZE)
		r, _ := call(t, c, hypercall.Msg{ID: uint32(10 + i), Op: hypercall.OpGnttabSharePage}, p.Fd())
		p.Close()
		if r.Errno != 0 {
			t.Fatalf("share page %d: %v", i, syscall.Errno(r.Errno))
		}
	}
	p, _ := shm.NewMemfd("p", abi.PAGE_SIZE)
	defer p.Close()
	expectErr("over its memory", syscall.ENOSPC, msg(hypercall.Msg{ID: 12, Op: hypercall.OpGnttabSharePage}), p.Fd())
	expectErr("refresh not its page", syscall.EINVAL, msg(hypercall.Msg{ID: 30, Op: hypercall.OpGnttabRefreshPage, Frame: 99}), p.Fd())
	expectErr("refresh without a page", syscall.EINVAL, msg(hypercall.Msg{ID: 31, Op: hypercall.OpGnttabRefreshPage, Frame: 0}))
	expectErr("refresh with an eventfd", syscall.EINVAL, msg(hypercall.Msg{ID: 32, Op: hypercall.OpGnttabRefreshPage, Frame: 0}), ev.Fd())
	expectErr("refresh with two pages", syscall.EINVAL, msg(hypercall.Msg{ID: 33, Op: hypercall.OpGnttabRefreshPage, Frame: 0}), big.Fd())
	expectErr("refresh with an unsealed memfd", syscall.EINVAL, msg(hypercall.Msg{ID: 34, Op: hypercall.OpGnttabRefreshPage, Frame: 0}), unsealed)
	expectErr("unshare not its page", syscall.EINVAL, msg(hypercall.Msg{ID: 13, Op: hypercall.OpGnttabUnsharePage, Frame: 99}))
	expectErr("close a port it lacks", syscall.EINVAL, msg(hypercall.Msg{ID: 14, Op: hypercall.OpEvtchnClose, Port: 5}))
	expectErr("status of another's port", syscall.EPERM, msg(hypercall.Msg{ID: 15, Op: hypercall.OpEvtchnStatus, Dom: 1, Port: 1}))
	expectErr("bind a port not offered", syscall.EINVAL, msg(hypercall.Msg{ID: 16, Op: hypercall.OpEvtchnBindInterdomain, Dom: 1, Port: 1}))
	expectErr("unmap a handle it lacks", syscall.EINVAL, msg(hypercall.Msg{ID: 17, Op: hypercall.OpGnttabUnmap, Handle: 3}))
	expectErr("copy without its struct", syscall.EINVAL, msg(hypercall.Msg{ID: 18, Op: hypercall.OpGnttabCopy, Data: []byte{1, 2}}))

	// Grants: only what is granted to it.
	s, err := good.SharePages(2, 1, true) // for dom 2, not 6
	if err != nil {
		t.Fatal(err)
	}
	expectErr("map another's grant", syscall.EPERM, msg(hypercall.Msg{ID: 20, Op: hypercall.OpGnttabMap, Dom: 1, Ref: uint32(s.Refs[0])}))
	expectErr("map out of range", syscall.EINVAL, msg(hypercall.Msg{ID: 21, Op: hypercall.OpGnttabMap, Dom: 1, Ref: 1 << 30}))
	expectErr("map from nobody", syscall.ESRCH, msg(hypercall.Msg{ID: 22, Op: hypercall.OpGnttabMap, Dom: 300, Ref: 8}))
	var op [abi.GnttabCopySize]byte
	abi.GnttabCopy{Source: abi.GnttabCopyPtr{U: 0, Domid: 1}, Dest: abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: abi.DOMID_SELF}, Len: 8}.Encode(op[:])
	expectErr("copy another's frame", syscall.EPERM, msg(hypercall.Msg{ID: 23, Op: hypercall.OpGnttabCopy, Data: op[:]}))
	abi.GnttabCopy{Source: abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: abi.DOMID_SELF}, Dest: abi.GnttabCopyPtr{U: uint64(s.Refs[0]), Domid: 1}, Len: 2, Flags: abi.GNTCOPY_dest_gref}.Encode(op[:])
	expectErr("copy into another's grant", syscall.EPERM, msg(hypercall.Msg{ID: 24, Op: hypercall.OpGnttabCopy, Data: append(op[:], 'h', 'i')}))
	expectErr("inline length lies", syscall.EINVAL, msg(hypercall.Msg{ID: 25, Op: hypercall.OpGnttabCopy, Data: append(op[:], 'h')}))

	// The good domain is unharmed; the log names the hostile one.
	if _, err := good.Map(1, s.Refs, true); !errors.Is(err, syscall.EPERM) { // its own grant is for dom 2
		t.Fatalf("good domain: %v", err)
	}
	if err := good.Unshare(s); err != nil {
		t.Fatal(err)
	}
	if s := e.log.String(); !strings.Contains(s, "name=evil") || strings.Count(s, "name=evil") < logBurst {
		t.Fatalf("hostile requests not logged:\n%s", s)
	}
	r, fds := call(t, c, hypercall.Msg{ID: 99, Op: hypercall.OpHello})
	closeFDs(fds)
	if r.Errno != 0 || r.Dom != 6 {
		t.Fatalf("agent stopped serving the domain: %+v", r)
	}
}

// TestSilentDomain: a domain that never reads its connection cannot make
// the agent queue without bound; it is disconnected.
func TestSilentDomain(t *testing.T) {
	e := newEnv(t)
	f, err := e.h.AddDomain(6, DomainConfig{Name: "silent"})
	if err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, f)
	defer c.Close()
	req := (&hypercall.Msg{ID: 1, Op: hypercall.OpEvtchnStatus, Dom: uint16(abi.DOMID_SELF), Port: 1}).Append(nil)
	// Write requests without reading until the agent stops taking them
	// (its request loop pauses) or drops us.
	c.SetWriteDeadline(timeNowPlus())
	for range 100000 {
		if _, err := c.Write(req); err != nil {
			break
		}
	}
	// Still alive for others, and the domain can be removed.
	e.h.RemoveDomain(6)
	if len(e.h.Domains()) != 0 {
		t.Fatal("domain not removed")
	}
}

// FuzzRequest sends one arbitrary packet as a domain's request: the agent
// answers it (or, for an empty packet, stops reading) and keeps serving.
func FuzzRequest(f *testing.F) {
	f.Add((&hypercall.Msg{ID: 1, Op: hypercall.OpHello}).Append(nil))
	f.Add((&hypercall.Msg{ID: 2, Op: hypercall.OpEvtchnAllocUnbound, Dom: uint16(abi.DOMID_SELF)}).Append(nil))
	f.Add((&hypercall.Msg{ID: 3, Op: hypercall.OpEvtchnBindIPI}).Append(nil))
	f.Add((&hypercall.Msg{ID: 4, Op: hypercall.OpGnttabMap, Dom: uint16(abi.DOMID_SELF), Ref: 8}).Append(nil))
	f.Add((&hypercall.Msg{ID: 5, Op: hypercall.OpGnttabCopy, Data: make([]byte, 44)}).Append(nil))
	f.Add((&hypercall.Msg{ID: 6, Op: hypercall.OpGnttabRefreshPage}).Append(nil))
	f.Add([]byte{9, 9, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return // reads as the domain hanging up
		}
		h := New(Config{})
		defer h.Close()
		fd, err := h.AddDomain(1, DomainConfig{})
		if err != nil {
			t.Fatal(err)
		}
		c := rawConn(t, fd)
		defer c.Close()
		if len(b) > hypercall.MaxMsg+64 {
			b = b[:hypercall.MaxMsg+64]
		}
		if err := shm.SendMsg(c, b); err != nil {
			t.Fatal(err)
		}
		if err := shm.SendMsg(c, (&hypercall.Msg{ID: 0xffff, Op: hypercall.OpHello}).Append(nil)); err != nil {
			t.Fatal(err)
		}
		// The fuzzed packet's reply (with its id, if it had one), then
		// the hello's: the agent still serves the domain.
		answered := false
		for {
			r, fds := recv(t, c)
			closeFDs(fds)
			if r.ID == 0xffff && r.Op == hypercall.OpHello {
				if r.Errno != 0 || !answered {
					t.Fatalf("hello after fuzz: %+v (fuzz answered: %v)", r, answered)
				}
				break
			}
			if len(b) < 4 || r.ID == binary.LittleEndian.Uint32(b) {
				answered = true
			}
		}
	})
}

func timeNowPlus() time.Time { return time.Now().Add(2 * time.Second) }
