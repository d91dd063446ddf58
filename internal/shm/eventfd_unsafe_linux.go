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
