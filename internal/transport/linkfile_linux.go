package transport

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// LinkFile turns a link (from DialLink, or as Config.Link received it)
// into a descriptor to hand to a domain process, and takes c over: the
// caller must not use or close c afterwards. Closing every copy of the
// file ends the link.
//
// Normally the file is the TCP socket itself: a close-on-exec duplicate
// in blocking mode, for a domain's plain read(2) and write(2), with
// TCP_NODELAY set; c is closed, so the mesh keeps no copy. When a fault
// of the hook (Config.Faults) is set as the link is made, or c is not a
// bare TCP connection (a TLS stream), the file is instead one end
// of a unix SOCK_STREAM socketpair, and two goroutines relay between the
// other end and c, so the link's bytes pass through the hook (delay,
// cut). The relay ends, closing both, when either side closes; Close ends
// it too. A link made while no fault is set never sees the hook: tests
// set their faults before the links they concern are made, and a test
// agent's links cost what a real one's do.
func (m *Mesh) LinkFile(c net.Conn) (*os.File, error) {
	if lc, ok := c.(*linkConn); ok {
		// The verdict must be in the socket before a domain can write.
		if err := lc.accept(); err != nil {
			c.Close()
			return nil, err
		}
		c = lc.Conn
	}
	if _, isTLS := c.(*tls.Conn); !isTLS && !m.cfg.Faults.Active() {
		// A TLS link is relayed: its socket carries records, not the
		// domain's bytes.
		if u, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = u.NetConn()
		}
		if tc, ok := c.(*net.TCPConn); ok {
			return socketFile(tc)
		}
	}
	return m.relay(c)
}

// socketFile duplicates tc's socket for a domain process and closes tc.
func socketFile(tc *net.TCPConn) (*os.File, error) {
	name := "shi-link:" + tc.RemoteAddr().String()
	rc, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	// Close Go's copy first: O_NONBLOCK belongs to the open socket, which
	// the duplicate shares, and Go's poller must not be using it when it
	// turns blocking.
	tc.Close()
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return nil, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl(O_NONBLOCK)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setsockopt(TCP_NODELAY)", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// relay is a LinkFile relay between our end of a socketpair and a link.
type relay struct {
	m    *Mesh
	ours net.Conn
	link net.Conn
	once sync.Once
}

// relay returns one end of a new socketpair and relays the other to c.
func (m *Mesh) relay(c net.Conn) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		c.Close()
		return nil, os.NewSyscallError("socketpair", err)
	}
	theirs := os.NewFile(uintptr(fds[0]), "shi-link")
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[1])
		theirs.Close()
		c.Close()
		return nil, os.NewSyscallError("fcntl(O_NONBLOCK)", err)
	}
	f := os.NewFile(uintptr(fds[1]), "shi-link-relay")
	ours, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		theirs.Close()
		c.Close()
		return nil, fmt.Errorf("transport: relay: %w", err)
	}
	r := &relay{m: m, ours: ours, link: c}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		ours.Close()
		theirs.Close()
		c.Close()
		return nil, ErrClosed
	}
	m.relays[r] = struct{}{}
	m.wg.Add(2)
	m.mu.Unlock()
	go r.pipe(c, ours)
	go r.pipe(ours, c)
	return theirs, nil
}

func (r *relay) pipe(dst, src net.Conn) {
	defer r.m.wg.Done()
	_, _ = io.Copy(dst, src)
	r.close()
}

// close ends the relay: both connections close, which ends both pipes.
// A faultnet link delivers bytes it holds back before it closes.
func (r *relay) close() {
	r.once.Do(func() {
		r.ours.Close()
		r.link.Close()
		r.m.mu.Lock()
		delete(r.m.relays, r)
		r.m.mu.Unlock()
	})
}
