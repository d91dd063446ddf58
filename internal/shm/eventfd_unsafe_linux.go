package shm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// SignalHot is Signal without the Go scheduler's system-call bookkeeping:
// a write to a non-blocking eventfd never blocks, so there is nothing to
// hand off, and a send on an event channel's hot path skips that cost.
func SignalHot(fd int) error {
	_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&one[0])), uintptr(len(one)))
	if errno != 0 && errno != unix.EAGAIN {
		return wrapSignal(errno)
	}
	return nil
}

// ReadHot is a blocking read(2) made as a raw syscall, like SignalHot: the
// eventfd baseline of the benchmarks uses it so that it pays no more for
// Go's scheduler than the event-channel path does.
func ReadHot(fd int, b []byte) error {
	_, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return errno
	}
	return nil
}
