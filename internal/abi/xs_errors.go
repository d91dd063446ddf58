package abi

import "syscall"

// XSErrors is xsd_errors[] from xs_wire.h in its order: clients map an
// XS_ERROR payload through it, first match wins, unknown names mean EINVAL.
var XSErrors = []struct {
	Errno syscall.Errno
	Name  string
}{
	{syscall.EINVAL, "EINVAL"},
	{syscall.EACCES, "EACCES"},
	{syscall.EEXIST, "EEXIST"},
	{syscall.EISDIR, "EISDIR"},
	{syscall.ENOENT, "ENOENT"},
	{syscall.ENOMEM, "ENOMEM"},
	{syscall.ENOSPC, "ENOSPC"},
	{syscall.EIO, "EIO"},
	{syscall.ENOTEMPTY, "ENOTEMPTY"},
	{syscall.ENOSYS, "ENOSYS"},
	{syscall.EROFS, "EROFS"},
	{syscall.EBUSY, "EBUSY"},
	{syscall.EAGAIN, "EAGAIN"},
	{syscall.EISCONN, "EISCONN"},
	{syscall.E2BIG, "E2BIG"},
	{syscall.EPERM, "EPERM"},
}

// XSErrorName returns the wire name of errno, or "EINVAL" for an errno the
// protocol cannot express (as C xenstored does).
func XSErrorName(e syscall.Errno) string {
	for _, x := range XSErrors {
		if x.Errno == e {
			return x.Name
		}
	}
	return "EINVAL"
}

// XSErrno maps a wire error name to its errno; unknown names are EINVAL.
func XSErrno(name string) syscall.Errno {
	for _, x := range XSErrors {
		if x.Name == name {
			return x.Errno
		}
	}
	return syscall.EINVAL
}
