package nbd

import (
	"fmt"
	"io"
	"sync"
)

// Backend is the block store an export serves. Offsets and lengths reach it
// already checked against Size. Its methods are called concurrently: the
// server runs a connection's requests in parallel.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	// Size is the export's size in bytes; it does not change while served.
	Size() int64
	// Flush makes every completed write durable.
	Flush() error
	// Trim discards a range; later reads may return anything until written.
	Trim(off, n int64) error
	// Zero makes a range read as zeroes; mayTrim lets it deallocate.
	Zero(off, n int64, mayTrim bool) error
	// ReadOnly backends are advertised NBD_FLAG_READ_ONLY and refuse writes.
	ReadOnly() bool
}

// Extent is a run of a backend's address space with one allocation status.
type Extent struct {
	Length int64
	Hole   bool // not allocated
	Zero   bool // reads as zeroes
}

// Extenter is implemented by backends that can report allocation
// (base:allocation). Extents returns runs covering at least the start of
// [off, off+n); the server clamps and merges them.
type Extenter interface {
	Extents(off, n int64) ([]Extent, error)
}

// Mem is an in-memory backend, for tests and scratch disks. A nil page is a
// hole, so Mem reports extents like a sparse file with pageSize blocks.
type Mem struct {
	ro   bool
	size int64

	// mu guards pages.
	mu    sync.Mutex
	pages [][]byte
}

const memPage = 4096

// NewMem returns a zeroed in-memory backend of size bytes.
func NewMem(size int64, readOnly bool) *Mem {
	return &Mem{ro: readOnly, size: size, pages: make([][]byte, (size+memPage-1)/memPage)}
}

func (m *Mem) Size() int64    { return m.size }
func (m *Mem) ReadOnly() bool { return m.ro }
func (m *Mem) Flush() error   { return nil }

func (m *Mem) check(off, n int64) error {
	if off < 0 || n < 0 || off > m.size || n > m.size-off {
		return fmt.Errorf("nbd: range %d+%d outside %d bytes", off, n, m.size)
	}
	return nil
}

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for done := 0; done < len(p); {
		o := off + int64(done)
		pg, in := o/memPage, int(o%memPage)
		c := min(len(p)-done, memPage-in)
		if m.pages[pg] == nil {
			clear(p[done : done+c])
		} else {
			copy(p[done:done+c], m.pages[pg][in:])
		}
		done += c
	}
	return len(p), nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for done := 0; done < len(p); {
		o := off + int64(done)
		pg, in := o/memPage, int(o%memPage)
		c := min(len(p)-done, memPage-in)
		if m.pages[pg] == nil {
			m.pages[pg] = make([]byte, memPage)
		}
		copy(m.pages[pg][in:], p[done:done+c])
		done += c
	}
	return len(p), nil
}

// Trim drops whole pages inside the range and zeroes partial ones.
func (m *Mem) Trim(off, n int64) error { return m.Zero(off, n, true) }

func (m *Mem) Zero(off, n int64, mayTrim bool) error {
	if err := m.check(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for o := off; o < off+n; {
		pg, in := o/memPage, o%memPage
		c := min(off+n-o, memPage-in)
		switch {
		case m.pages[pg] == nil:
		case mayTrim && c == memPage:
			m.pages[pg] = nil
		default:
			clear(m.pages[pg][in : in+c])
		}
		o += c
	}
	return nil
}

func (m *Mem) Extents(off, n int64) ([]Extent, error) {
	if err := m.check(off, n); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Extent
	for o := off; o < off+n; {
		pg, in := o/memPage, o%memPage
		c := min(off+n-o, memPage-in)
		hole := m.pages[pg] == nil
		if k := len(out) - 1; k >= 0 && out[k].Hole == hole {
			out[k].Length += c
		} else {
			out = append(out, Extent{Length: c, Hole: hole, Zero: hole})
		}
		o += c
	}
	return out, nil
}
