package bench

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// readHot and writeHot are read(2) and write(2) made as raw system calls,
// without the Go scheduler's bookkeeping (as shm.ReadHot and
// shm.SignalHot for eventfds): the TCP ping-pong baseline blocks in them
// as the event-channel library blocks in its raw epoll_wait, so neither
// path pays for handing its P over while it waits.
func readHot(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(p), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func writeHot(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(p), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
