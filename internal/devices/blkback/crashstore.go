package blkback

import (
	"fmt"
	"io"
	"sync"

	"shi/internal/nbd"
)

// CrashStore is an nbd.Backend that keeps every write, trim and zero
// since the last Flush in memory, over an underlying store, and can
// Crash: forget them, as a host that loses power forgets what never
// reached stable storage. SIGKILL keeps the page cache, so only such a
// layer shows a missing fsync. Flush applies the pending changes to the
// underlying store, in order, and then flushes it.
type CrashStore struct {
	base nbd.Backend

	// mu guards pending; it is held across a Flush, so a write that
	// returns after Flush began waits for the next one.
	mu      sync.Mutex
	pending []change
}

// change is one write (data) or zeroing (data nil) not yet flushed.
type change struct {
	off, n int64
	data   []byte
	trim   bool // a zeroing that came as Trim, or Zero that may trim
}

var (
	_ nbd.Backend  = (*CrashStore)(nil)
	_ nbd.Extenter = (*CrashStore)(nil)
)

// NewCrashStore wraps base.
func NewCrashStore(base nbd.Backend) *CrashStore { return &CrashStore{base: base} }

// Size implements nbd.Backend.Size.
func (c *CrashStore) Size() int64 { return c.base.Size() }

// ReadOnly implements nbd.Backend.ReadOnly.
func (c *CrashStore) ReadOnly() bool { return c.base.ReadOnly() }

func (c *CrashStore) check(off, n int64) error {
	if size := c.base.Size(); off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("blkback: range %d+%d outside %d bytes", off, n, size)
	}
	if c.base.ReadOnly() {
		return fmt.Errorf("blkback: %w", ErrReadOnly)
	}
	return nil
}

// ReadAt implements io.ReaderAt: the underlying store's bytes with the
// pending changes laid over them, oldest first.
func (c *CrashStore) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.base.ReadAt(p, off)
	if err != nil && !(err == io.EOF && n == len(p)) {
		return n, err
	}
	end := off + int64(len(p))
	for _, ch := range c.pending {
		lo, hi := max(off, ch.off), min(end, ch.off+ch.n)
		if lo >= hi {
			continue
		}
		dst := p[lo-off : hi-off]
		if ch.data == nil {
			clear(dst)
		} else {
			copy(dst, ch.data[lo-ch.off:])
		}
	}
	return len(p), nil
}

// WriteAt implements io.WriterAt: the write is pending until Flush.
func (c *CrashStore) WriteAt(p []byte, off int64) (int, error) {
	if err := c.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, change{off: off, n: int64(len(p)), data: append([]byte(nil), p...)})
	return len(p), nil
}

// Trim implements nbd.Backend.Trim: the range reads as zeroes (one of the
// things a trim may do) and is trimmed underneath at Flush.
func (c *CrashStore) Trim(off, n int64) error { return c.zero(off, n, true) }

// Zero implements nbd.Backend.Zero.
func (c *CrashStore) Zero(off, n int64, mayTrim bool) error { return c.zero(off, n, mayTrim) }

func (c *CrashStore) zero(off, n int64, trim bool) error {
	if err := c.check(off, n); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, change{off: off, n: n, trim: trim})
	return nil
}

// Flush implements nbd.Backend.Flush: the pending changes reach the
// underlying store, which is then flushed. On an error they stay pending.
func (c *CrashStore) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ch := range c.pending {
		var err error
		switch {
		case ch.data != nil:
			_, err = c.base.WriteAt(ch.data, ch.off)
		case ch.trim:
			err = c.base.Zero(ch.off, ch.n, true)
		default:
			err = c.base.Zero(ch.off, ch.n, false)
		}
		if err != nil {
			c.pending = c.pending[i:]
			return err
		}
	}
	c.pending = nil
	return c.base.Flush()
}

// Crash forgets every change since the last Flush.
func (c *CrashStore) Crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = nil
}

// Pending is how many changes wait for a Flush.
func (c *CrashStore) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Extents implements nbd.Extenter: the underlying store's, with every run
// that a pending change touches reported as data.
func (c *CrashStore) Extents(off, n int64) ([]nbd.Extent, error) {
	if size := c.base.Size(); off < 0 || n < 0 || off > size || n > size-off {
		return nil, fmt.Errorf("blkback: range %d+%d outside %d bytes", off, n, size)
	}
	ex, ok := c.base.(nbd.Extenter)
	if !ok {
		return []nbd.Extent{{Length: n}}, nil
	}
	out, err := ex.Extents(off, n)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at := off
	for i := range out {
		for _, ch := range c.pending {
			if ch.off < at+out[i].Length && at < ch.off+ch.n {
				out[i].Hole, out[i].Zero = false, false
				break
			}
		}
		at += out[i].Length
	}
	return out, nil
}

// Close closes the underlying store if it has a Close; pending changes
// are dropped, as at a crash.
func (c *CrashStore) Close() error {
	c.Crash()
	if cl, ok := c.base.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}
