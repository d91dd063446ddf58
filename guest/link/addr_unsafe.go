package link

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// addr is the address of b's first byte: pages are known by where they
// are mapped.
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// The links' descriptors are non-blocking, so their reads and writes
// never wait in the kernel: they are made as raw system calls, without
// the Go scheduler's bookkeeping (which hands the P off and takes it
// back, a futex wake-up now and then), as shm.SignalHot does for an
// event channel's doorbell. A wait for room (poll) stays an ordinary
// system call.

// rawRead is read(2) on a non-blocking descriptor.
func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawWritev is writev(2) on a non-blocking descriptor; iov holds at
// most IOV_MAX non-empty slices.
func rawWritev(fd int, iov [][]byte) (int, error) {
	vs := make([]unix.Iovec, 0, len(iov))
	for _, b := range iov {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&vs[0])), uintptr(len(vs)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
