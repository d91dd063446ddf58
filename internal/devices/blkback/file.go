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
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	// The lock's descriptor also serves vectored I/O (ReadvAt, WritevAt).
	lock, err := os.OpenFile(path, flag, 0)
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

// vectorStore is a store that moves the buffers of a request, laid end to
// end on the disk, in one system call: a 1 MiB request is 256 pages.
type vectorStore interface {
	ReadvAt(bufs [][]byte, off int64) error
	WritevAt(bufs [][]byte, off int64) error
}

var _ vectorStore = (*lockedFile)(nil)

// ReadvAt implements vectorStore.ReadvAt with preadv(2); past the end of
// the file reads as zeroes, as ReadAt of a sparse file's hole does.
func (f *lockedFile) ReadvAt(bufs [][]byte, off int64) error {
	return vectored(bufs, off, func(iov [][]byte, at int64) (int, error) {
		n, err := unix.Preadv(int(f.lock.Fd()), iov, at)
		if n == 0 && err == nil {
			for _, b := range iov {
				clear(b)
			}
			return total(iov), nil
		}
		return n, err
	})
}

// WritevAt implements vectorStore.WritevAt with pwritev(2).
func (f *lockedFile) WritevAt(bufs [][]byte, off int64) error {
	if f.ReadOnly() {
		return fmt.Errorf("blkback: %w", ErrReadOnly)
	}
	return vectored(bufs, off, func(iov [][]byte, at int64) (int, error) {
		return unix.Pwritev(int(f.lock.Fd()), iov, at)
	})
}

// vectored calls op until every byte of bufs has moved, resuming after a
// short transfer, at most iovMax buffers a call.
func vectored(bufs [][]byte, off int64, op func(iov [][]byte, at int64) (int, error)) error {
	const iovMax = 1024
	iov := make([][]byte, 0, min(len(bufs), iovMax))
	for len(bufs) > 0 {
		iov = append(iov[:0], bufs[:min(len(bufs), iovMax)]...)
		n, err := op(iov, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		off += int64(n)
		for n > 0 && len(bufs) > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				n = 0
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
	return nil
}

func total(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}
