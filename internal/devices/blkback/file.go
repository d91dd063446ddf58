package blkback

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"shi/internal/nbd"
)

// ErrInUse means an image is served by another back end in a way that
// excludes this use: writable anywhere, or read-only elsewhere while this
// one asks to write.
var ErrInUse = errors.New("blkback: the disk image is in use")

// lockedFile is a raw image and the flock that keeps it to one writer.
type lockedFile struct {
	*nbd.File
	lock *os.File
}

// Close implements io.Closer: the file, then its lock.
func (f *lockedFile) Close() error { return errors.Join(f.File.Close(), f.lock.Close()) }

// OpenFile opens a raw (sparse) image, the default ServiceConfig.Open. It
// takes an flock on the file, exclusive when writable and shared when
// not, without waiting: a file is never served writable to two front
// ends, nor writable to one and read-only to another, by back ends on
// this host. The lock is released when the returned store is closed
// (it is an io.Closer).
func OpenFile(path string, writable bool) (nbd.Backend, error) {
	lock, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if writable {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(lock.Fd()), how|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if writable {
				return nil, fmt.Errorf("%w: %s is served to another domain, so it cannot be served writable", ErrInUse, path)
			}
			return nil, fmt.Errorf("%w: %s is served writable to another domain", ErrInUse, path)
		}
		return nil, fmt.Errorf("blkback: lock %s: %w", path, err)
	}
	if writable {
		// The agent runs as root, which may write any file: a file that
		// nobody may write is refused, not silently served writable.
		if st, err := lock.Stat(); err == nil && st.Mode().Perm()&0o222 == 0 {
			lock.Close()
			return nil, fmt.Errorf("blkback: %s is read-only (mode %v), so it cannot be served writable", path, st.Mode().Perm())
		}
	}
	f, err := nbd.OpenFile(path, !writable)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &lockedFile{File: f, lock: lock}, nil
}
