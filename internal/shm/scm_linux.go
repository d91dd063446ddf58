package shm

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

var (
	// ErrTooManyFDs means a message carried more descriptors than the
	// receiver accepts; all of them have been closed.
	ErrTooManyFDs = errors.New("shm: message carried too many descriptors")
	// ErrTruncated means a datagram or seqpacket message did not fit the
	// buffer; its descriptors have been closed.
	ErrTruncated = errors.New("shm: message truncated")
)

// SendMsg sends b with the descriptors fds attached (SCM_RIGHTS). The
// descriptors stay open in the sender. Use a SOCK_SEQPACKET connection
// ("unixpacket") so that descriptors stay tied to their message.
func SendMsg(c *net.UnixConn, b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("shm: sendmsg: %w", err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("shm: sendmsg: short write %d/%d", n, len(b))
	}
	return nil
}

// RecvMsg reads one message into b and returns the descriptors that came
// with it, at most maxFDs, close-on-exec and owned by the caller. A
// message with more descriptors, or (on a seqpacket socket) longer than
// b, has all its descriptors closed and returns ErrTooManyFDs or
// ErrTruncated along with the bytes read. n == 0 with a nil error is the
// peer's orderly shutdown.
func RecvMsg(c *net.UnixConn, b []byte, maxFDs int) (n int, fds []int, err error) {
	var oob []byte
	if maxFDs > 0 {
		oob = make([]byte, unix.CmsgSpace(4*maxFDs))
	}
	n, oobn, flags, _, err := c.ReadMsgUnix(b, oob)
	if err != nil {
		// Descriptors can arrive even with an error; don't leak them.
		closeAll(parseRights(oob[:oobn]))
		return n, nil, fmt.Errorf("shm: recvmsg: %w", err)
	}
	fds = parseRights(oob[:oobn])
	switch {
	case flags&unix.MSG_CTRUNC != 0 || len(fds) > maxFDs:
		closeAll(fds)
		return n, nil, ErrTooManyFDs
	case flags&unix.MSG_TRUNC != 0:
		closeAll(fds)
		return n, nil, ErrTruncated
	}
	return n, fds, nil
}

// parseRights extracts every SCM_RIGHTS descriptor from control data,
// ignoring other control messages.
func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if r, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// SocketPair returns two connected Unix sockets of the given type
// (unix.SOCK_SEQPACKET or unix.SOCK_STREAM), close-on-exec.
func SocketPair(typ int) (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("shm: socketpair: %w", err)
	}
	a, err := fdConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := fdConn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// FileConn wraps a Unix socket descriptor (e.g. inherited from a parent)
// as a *net.UnixConn, taking ownership of fd.
func FileConn(fd int) (*net.UnixConn, error) { return fdConn(fd) }

func fdConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "unix")
	defer f.Close() // net.FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("shm: socket fd %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("shm: fd %d is not a Unix socket", fd)
	}
	return uc, nil
}
