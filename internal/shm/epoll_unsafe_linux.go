package shm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// WaitHot is Wait without telling the Go scheduler that the thread
// blocks: the goroutine keeps its P for up to msec milliseconds (0 < msec;
// keep it to a few), as if it were computing. Use it on a hot path where
// the event is expected soon: a blocking system call that takes longer
// than sysmon's 20µs tick makes the runtime hand the P to another thread
// and wake one to poll the network, which on a small virtual machine
// costs more than the wait itself. Signals (the scheduler's preemption
// among them) end the wait early with n == 0.
func (e *Epoll) WaitHot(events []unix.EpollEvent, msec int) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(e.fd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if errno == unix.EINTR {
		return 0, nil
	}
	if errno != 0 {
		return 0, wrapEpoll("wait", errno)
	}
	return int(r), nil
}
