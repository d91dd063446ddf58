package shm

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMemfdSealed(t *testing.T) {
	m, err := NewMemfd("test", PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := VerifyMemfd(m.Fd(), PageSize); err != nil {
		t.Fatalf("own memfd: %v", err)
	}
	for _, size := range []int64{0, PageSize / 2, 2 * PageSize} {
		if err := unix.Ftruncate(m.Fd(), size); !errors.Is(err, unix.EPERM) {
			t.Errorf("ftruncate to %d: %v, want EPERM", size, err)
		}
	}
	if _, err := unix.FcntlInt(uintptr(m.Fd()), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("adding a seal: %v, want EPERM", err)
	}
	if err := VerifyMemfd(m.Fd(), 2*PageSize); !errors.Is(err, ErrNotMemfd) {
		t.Errorf("wrong size accepted: %v", err)
	}
}

func TestVerifyMemfdRejects(t *testing.T) {
	unsealed, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(unsealed)
	unix.Ftruncate(unsealed, PageSize)
	f, err := os.CreateTemp(t.TempDir(), "page")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(PageSize)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	for name, fd := range map[string]int{"unsealed memfd": unsealed, "regular file": int(f.Fd()), "pipe": p[0]} {
		if err := VerifyMemfd(fd, PageSize); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestMappingSharesMemory(t *testing.T) {
	m, err := NewMemfd("test", PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := m.Map(true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unmap()
	b, err := Map(m.Fd(), PageSize, false)
	if err != nil {
		t.Fatal(err)
	}
	copy(a.Bytes()[100:], "shared")
	if string(b.Bytes()[100:106]) != "shared" {
		t.Fatal("second mapping does not see the write")
	}
	if err := b.Unmap(); err != nil || b.Unmap() != nil || b.Bytes() != nil {
		t.Fatal("Unmap twice")
	}
}

func TestReadOnlyFd(t *testing.T) {
	m, err := NewMemfd("test", PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ro, err := m.ReadOnlyFd()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ro)
	if _, err := Map(ro, PageSize, true); !errors.Is(err, unix.EACCES) {
		t.Fatalf("writable map of the read-only fd: %v, want EACCES", err)
	}
	r, err := Map(ro, PageSize, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unmap()
	w, _ := m.Map(true)
	defer w.Unmap()
	w.Bytes()[0] = 42
	if r.Bytes()[0] != 42 {
		t.Fatal("read-only mapping is not the same memory")
	}
	if err := VerifyMemfd(ro, PageSize); err != nil {
		t.Fatalf("read-only fd fails VerifyMemfd: %v", err)
	}
}

func TestEventFDCoalesces(t *testing.T) {
	e, err := NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n, err := e.Drain(); n != 0 || err != nil {
		t.Fatalf("fresh eventfd: %d %v", n, err)
	}
	for range 3 {
		if err := e.Signal(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.Drain(); n != 3 || err != nil {
		t.Fatalf("drain: %d %v", n, err)
	}
	if n, _ := e.Drain(); n != 0 {
		t.Fatalf("second drain: %d", n)
	}
}

// TestEpollMaskUnmask walks the guest library's pending/mask/unmask cycle.
func TestEpollMaskUnmask(t *testing.T) {
	ep, err := NewEpoll()
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	a, _ := NewEventFD()
	b, _ := NewEventFD()
	defer a.Close()
	defer b.Close()
	if err := ep.Add(a.Fd(), unix.EPOLLIN, 7); err != nil {
		t.Fatal(err)
	}
	if err := ep.Add(b.Fd(), unix.EPOLLIN, 8); err != nil {
		t.Fatal(err)
	}
	evs := make([]unix.EpollEvent, 4)
	wait := func() []int32 {
		n, err := ep.Wait(evs, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []int32
		for _, ev := range evs[:n] {
			got = append(got, ev.Fd)
		}
		return got
	}
	if got := wait(); len(got) != 0 {
		t.Fatalf("idle: %v", got)
	}
	a.Signal()
	a.Signal()
	if got := wait(); len(got) != 1 || got[0] != 7 {
		t.Fatalf("pending: %v", got)
	}
	// pending(): clear and mask. A send while masked is not reported...
	a.Drain()
	ep.Modify(a.Fd(), 0, 7)
	a.Signal()
	if got := wait(); len(got) != 0 {
		t.Fatalf("masked port reported: %v", got)
	}
	// ...until unmask, which re-checks.
	ep.Modify(a.Fd(), unix.EPOLLIN, 7)
	if got := wait(); len(got) != 1 || got[0] != 7 {
		t.Fatalf("after unmask: %v", got)
	}
	if err := ep.Delete(a.Fd()); err != nil {
		t.Fatal(err)
	}
	if got := wait(); len(got) != 0 {
		t.Fatalf("deleted fd reported: %v", got)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestRecvMsgBounds(t *testing.T) {
	a, b, err := SocketPair(unix.SOCK_SEQPACKET)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	e, _ := NewEventFD()
	defer e.Close()
	buf := make([]byte, 16)

	for _, tc := range []struct {
		name    string
		msg     []byte
		send    int // descriptors sent (all e)
		max     int
		wantErr error
	}{
		{"none expected, none sent", []byte("x"), 0, 0, nil},
		{"two of two", []byte("x"), 2, 2, nil},
		{"one of two", []byte("x"), 1, 2, nil},
		{"none expected", []byte("x"), 1, 0, ErrTooManyFDs},
		{"three for two", []byte("x"), 3, 2, ErrTooManyFDs},
		{"two for one (room rounds up)", []byte("x"), 2, 1, ErrTooManyFDs},
		{"many for one", []byte("x"), 200, 1, ErrTooManyFDs},
		{"truncated", bytes.Repeat([]byte("y"), 40), 1, 1, ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			fds := make([]int, tc.send)
			for i := range fds {
				fds[i] = e.Fd()
			}
			if err := SendMsg(a, tc.msg, fds...); err != nil {
				t.Fatal(err)
			}
			n, got, err := RecvMsg(b, buf, tc.max)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if n == 0 {
				t.Fatal("no data")
			}
			if err == nil && len(got) != tc.send {
				t.Fatalf("got %d fds, want %d", len(got), tc.send)
			}
			for _, fd := range got {
				if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
					t.Errorf("received fd %d is not close-on-exec", fd)
				}
				unix.Close(fd)
			}
			if after := openFDs(t); after != before {
				t.Fatalf("leaked %d descriptors", after-before)
			}
		})
	}
}

func init() {
	// The child maps the memfd it received, checks the parent's bytes,
	// writes its own and rings the eventfd it received.
	testChildren["memfd-peer"] = func() error {
		c, err := FileConn(3)
		if err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, fds, err := RecvMsg(c, buf, 2)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "page+bell" || len(fds) != 2 {
			return errors.New("unexpected message")
		}
		page, err := AdoptMemfd(fds[0], PageSize)
		if err != nil {
			return err
		}
		m, err := page.Map(true)
		if err != nil {
			return err
		}
		if string(m.Bytes()[:5]) != "hello" {
			return errors.New("parent's bytes not visible")
		}
		copy(m.Bytes()[100:], "world")
		if err := EventFDFrom(fds[1]).Signal(); err != nil {
			return err
		}
		return SendMsg(c, []byte("done"))
	}
}

// TestPassPageToAnotherProcess sends a memfd page and an eventfd to a
// child process over SCM_RIGHTS; each side sees the other's writes.
func TestPassPageToAnotherProcess(t *testing.T) {
	page, err := NewMemfd("page", PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	m, err := page.Map(true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	copy(m.Bytes(), "hello")
	bell, _ := NewEventFD()
	defer bell.Close()

	mine, theirs, err := SocketPair(unix.SOCK_SEQPACKET)
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	f, err := theirs.File()
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := SendMsg(mine, []byte("page+bell"), page.Fd(), bell.Fd()); err != nil {
		t.Fatal(err)
	}
	runChild(t, "memfd-peer", f)
	f.Close()

	n, _, err := RecvMsg(mine, make([]byte, 8), 0)
	if err != nil || n != 4 {
		t.Fatalf("child's reply: %d %v", n, err)
	}
	if string(m.Bytes()[100:105]) != "world" {
		t.Fatalf("child's write not visible: %q", m.Bytes()[100:105])
	}
	if v, _ := bell.Drain(); v != 1 {
		t.Fatalf("eventfd = %d, want 1", v)
	}
}

func TestMapPagesContiguous(t *testing.T) {
	var fds []int
	for i := range 3 {
		m, err := NewMemfd("page", PageSize)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		w, _ := m.Map(true)
		w.Bytes()[0] = byte(10 + i)
		w.Unmap()
		fds = append(fds, m.Fd())
	}
	all, err := MapPages(fds, true)
	if err != nil {
		t.Fatal(err)
	}
	b := all.Bytes()
	if len(b) != 3*PageSize || b[0] != 10 || b[PageSize] != 11 || b[2*PageSize] != 12 {
		t.Fatalf("pages not side by side: len %d", len(b))
	}
	b[2*PageSize+1] = 99
	one, _ := Map(fds[2], PageSize, false)
	defer one.Unmap()
	if one.Bytes()[1] != 99 {
		t.Fatal("write through the contiguous map not shared")
	}
	if err := all.Unmap(); err != nil {
		t.Fatal(err)
	}
	ro, err := MapPages(fds[:1], false)
	if err != nil {
		t.Fatal(err)
	}
	ro.Unmap()
	if _, err := MapPages(nil, false); err == nil {
		t.Fatal("mapped no pages")
	}
}

func TestEpollWaitHot(t *testing.T) {
	ep, err := NewEpoll()
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	e, _ := NewEventFD()
	defer e.Close()
	ep.Add(e.Fd(), unix.EPOLLIN, 3)
	evs := make([]unix.EpollEvent, 2)
	if n, err := ep.WaitHot(evs, 1); n != 0 || err != nil {
		t.Fatalf("idle: %d %v", n, err)
	}
	e.Signal()
	if n, err := ep.WaitHot(evs, 1000); n != 1 || err != nil || evs[0].Fd != 3 {
		t.Fatalf("ready: %d %v %+v", n, err, evs[0])
	}
}

func TestSignalHot(t *testing.T) {
	e, _ := NewEventFD()
	defer e.Close()
	for range 2 {
		if err := SignalHot(e.Fd()); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := e.Drain(); n != 2 {
		t.Fatalf("counter %d", n)
	}
	if err := SignalHot(-1); err == nil {
		t.Fatal("signal on a bad fd succeeded")
	}
}

// TestRemapPage: the address of a page in a contiguous mapping shows
// another memfd afterwards, and the old memfd no longer sees its writes.
func TestRemapPage(t *testing.T) {
	var fds []int
	for range 2 {
		m, err := NewMemfd("page", PageSize)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		fds = append(fds, m.Fd())
	}
	all, err := MapPages(fds, true)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Unmap()
	fresh, err := NewMemfd("fresh", PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	b := all.Bytes()
	b[PageSize] = 1
	if err := RemapPage(b[PageSize:], fresh.Fd(), true); err != nil {
		t.Fatal(err)
	}
	b[PageSize+1] = 2
	old, _ := Map(fds[1], PageSize, false)
	defer old.Unmap()
	now, _ := fresh.Map(false)
	defer now.Unmap()
	if old.Bytes()[0] != 1 || old.Bytes()[1] != 0 || now.Bytes()[1] != 2 {
		t.Fatalf("old page %v, fresh page %v", old.Bytes()[:2], now.Bytes()[:2])
	}
	if err := RemapPage(b[1:], fresh.Fd(), true); err == nil {
		t.Fatal("remapped an unaligned address")
	}
}
