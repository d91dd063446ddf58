package shm

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"shi/internal/abi"
)

// PageSize is the unit of sharing.
const PageSize = abi.PAGE_SIZE

// requiredSeals are what every shared memfd must carry.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// ErrNotMemfd means a descriptor is not a sealed memfd of the expected size.
var ErrNotMemfd = errors.New("shm: not a sealed memfd of the expected size")

// Memfd is an anonymous shared-memory file of fixed size.
type Memfd struct {
	fd   int
	size int
}

// NewMemfd creates a zeroed memfd of size bytes, mode 0600, sealed to that
// size. The descriptor is close-on-exec.
func NewMemfd(name string, size int) (*Memfd, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm: memfd size %d", size)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	m := &Memfd{fd: fd, size: size}
	if err := m.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return m, nil
}

func (m *Memfd) setup() error {
	if err := unix.Ftruncate(m.fd, int64(m.size)); err != nil {
		return fmt.Errorf("shm: ftruncate memfd: %w", err)
	}
	// Only the owner's uid may reopen it through /proc/self/fd, e.g. to
	// turn a read-only descriptor into a writable one.
	if err := unix.Fchmod(m.fd, 0o600); err != nil {
		return fmt.Errorf("shm: fchmod memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(m.fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		return fmt.Errorf("shm: seal memfd: %w", err)
	}
	return nil
}

// VerifyMemfd checks that fd, received from another process, is a memfd
// of exactly size bytes that can never shrink or grow.
func VerifyMemfd(fd, size int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("shm: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(size) {
		return ErrNotMemfd
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&requiredSeals != requiredSeals {
		return ErrNotMemfd
	}
	return nil
}

// AdoptMemfd takes ownership of a received descriptor after VerifyMemfd.
// On error fd is left open for the caller to close.
func AdoptMemfd(fd, size int) (*Memfd, error) {
	if err := VerifyMemfd(fd, size); err != nil {
		return nil, err
	}
	return &Memfd{fd: fd, size: size}, nil
}

// Fd is the descriptor, owned by m.
func (m *Memfd) Fd() int { return m.fd }

// Size is the file's size in bytes.
func (m *Memfd) Size() int { return m.size }

// Close closes the descriptor; mappings stay valid until unmapped.
func (m *Memfd) Close() error { return unix.Close(m.fd) }

// ReadOnlyFd opens a new read-only descriptor for the same memory, the one
// to hand to a domain that was granted read-only access: mmap with
// PROT_WRITE of it fails with EACCES. The caller owns the result. A
// process running as the memfd's owner (or root) could still reopen it
// writable through /proc; only a different uid makes that impossible.
func (m *Memfd) ReadOnlyFd() (int, error) {
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(m.fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("shm: reopen memfd read-only: %w", err)
	}
	return fd, nil
}

// Map maps the whole memfd shared, writable or read-only.
func (m *Memfd) Map(writable bool) (*Mapping, error) { return Map(m.fd, m.size, writable) }

// Mapping is a MAP_SHARED mapping of a file.
type Mapping struct {
	b   []byte
	raw bool // made by MapPages
}

// Map maps size bytes of fd at offset 0, MAP_SHARED.
func Map(fd, size int, writable bool) (*Mapping, error) {
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	b, err := unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	return &Mapping{b: b}, nil
}

// Bytes is the mapped memory; it is invalid after Unmap.
func (m *Mapping) Bytes() []byte { return m.b }

// Unmap releases the mapping. It is safe to call twice.
func (m *Mapping) Unmap() error {
	if m.b == nil {
		return nil
	}
	var err error
	if m.raw {
		err = munmapRaw(m.b)
	} else {
		err = unix.Munmap(m.b)
	}
	m.b = nil
	return err
}
