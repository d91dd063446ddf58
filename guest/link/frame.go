package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Frames on a link. Each is a 16-byte header and a payload:
//
//	offset size field
//	0      1    type     frameEvent, frameUpdate, framePage, frameFence
//	1      1    dir      frameUpdate: toGranter (the sender maps the page)
//	                     or toMapper (the sender granted it); else 0
//	2      2    reserved (0)
//	4      4    ref      the granter's grant ref; frameEvent: the port
//	8      4    gen      the mapper's generation of the map
//	12     4    len      payload bytes
//
// frameEvent has no payload: make the receiver's port pending.
// frameUpdate's payload is runs, each u16 offset, u16 length, the bytes,
// in ascending order, not overlapping, inside the page. The updates of
// one release (at most one per page) end with frameCommit: the receiver
// applies all of them or none, so a reader never sees a ring's index
// without the data it covers.
// framePage's payload is a whole page, the first content of a replica.
// frameFence has no payload: the sender unmapped the grant; nothing for
// that generation follows.
const (
	frameEvent  = 1
	frameUpdate = 2
	framePage   = 3
	frameFence  = 4
	frameCommit = 5
)

// Directions of an update.
const (
	toGranter = 1
	toMapper  = 2
)

const (
	headerSize = 16
	runHeader  = 4
	// maxPayload bounds a frame's payload: a whole page in runs, in the
	// worst case one run for every other byte.
	maxPayload = pageSize/2*(runHeader+1) + runHeader
)

// errFrame is a malformed frame: the peer's library is broken or
// hostile, and the link is dropped.
var errFrame = errors.New("link: malformed frame")

type header struct {
	typ, dir uint8
	ref, gen uint32
	n        uint32
}

func (h header) append(b []byte) []byte {
	b = append(b, h.typ, h.dir, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, h.ref)
	b = binary.LittleEndian.AppendUint32(b, h.gen)
	return binary.LittleEndian.AppendUint32(b, h.n)
}

// parseHeader checks a frame header.
func parseHeader(b []byte) (header, error) {
	h := header{
		typ: b[0], dir: b[1],
		ref: binary.LittleEndian.Uint32(b[4:]),
		gen: binary.LittleEndian.Uint32(b[8:]),
		n:   binary.LittleEndian.Uint32(b[12:]),
	}
	bad := b[2] != 0 || b[3] != 0
	switch h.typ {
	case frameEvent, frameFence, frameCommit:
		bad = bad || h.dir != 0 || h.n != 0
	case frameUpdate:
		bad = bad || (h.dir != toGranter && h.dir != toMapper) || h.n == 0 || h.n > maxPayload
	case framePage:
		bad = bad || h.dir != 0 || h.n != pageSize
	default:
		bad = true
	}
	if bad {
		return h, fmt.Errorf("%w: type %d dir %d len %d", errFrame, h.typ, h.dir, h.n)
	}
	return h, nil
}

// run is one run of an update: page[off:off+len(data)] = data.
type run struct {
	off  int
	data []byte
}

// parseRuns checks and splits an update's payload; the runs alias b.
func parseRuns(b []byte, fn func(run)) error {
	prev := 0
	for first := true; len(b) > 0; first = false {
		if len(b) < runHeader {
			return fmt.Errorf("%w: truncated run", errFrame)
		}
		off := int(binary.LittleEndian.Uint16(b))
		n := int(binary.LittleEndian.Uint16(b[2:]))
		b = b[runHeader:]
		if n == 0 || n > len(b) || off < prev || (!first && off == prev) || off+n > pageSize {
			return fmt.Errorf("%w: run %d+%d after %d", errFrame, off, n, prev)
		}
		fn(run{off, b[:n:n]})
		b = b[n:]
		prev = off + n
	}
	return nil
}

// checkRuns validates a payload without applying it, so that a bad
// update changes nothing.
func checkRuns(b []byte) error { return parseRuns(b, func(run) {}) }

// putRunLen sets the length in a run header.
func putRunLen(h []byte, n int) { binary.LittleEndian.PutUint16(h[2:], uint16(n)) }

// appendRun appends one run's header and bytes.
func appendRun(b []byte, off int, data []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(off))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// diff appends to b the runs where page differs from twin and copies them
// into twin. Equal 64-byte blocks are skipped with one comparison each
// (the runtime's vectorised memequal); runs are exact to the byte, so a
// byte the peer changed in the same word is never overwritten.
func diff(b, twin, page []byte) []byte {
	const block = 64
	n := len(page)
	start := -1
	flush := func(end int) {
		// Into the twin first, and ship the twin's bytes: a write racing
		// with the diff then differs from the twin and goes next time.
		copy(twin[start:end], page[start:end])
		b = appendRun(b, start, twin[start:end])
		start = -1
	}
	for i := 0; i < n; {
		if start < 0 && i%block == 0 && i+block <= n && bytes.Equal(twin[i:i+block], page[i:i+block]) {
			i += block
			continue
		}
		if twin[i] != page[i] {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			flush(i)
		}
		i++
	}
	if start >= 0 {
		flush(n)
	}
	return b
}

// bitmap marks bytes of a page, one bit each.
type bitmap [pageSize / 64]uint64

// set marks bytes [off, off+n): whole words at once, since a ring's
// writes mark pages by the tens of thousands a second.
func (m *bitmap) set(off, n int) {
	for end := off + n; off < end; {
		w, bit := off/64, off%64
		k := min(64-bit, end-off)
		m[w] |= (^uint64(0) >> (64 - k)) << bit
		off += k
	}
}

func (m *bitmap) empty() bool {
	for _, w := range m {
		if w != 0 {
			return false
		}
	}
	return true
}

// runs calls fn for each run of marked bytes, in order.
func (m *bitmap) runs(fn func(off, n int)) {
	start := -1 // where the open run began
	for w, word := range m {
		for bit := 0; bit < 64; {
			// The next bit that opens a run (marked) or closes one (not).
			rest := word >> uint(bit)
			if start >= 0 {
				rest = ^word >> uint(bit)
			}
			if rest == 0 {
				break // none in this word
			}
			bit += bits.TrailingZeros64(rest)
			if start < 0 {
				start = w*64 + bit
			} else {
				fn(start, w*64+bit-start)
				start = -1
			}
		}
	}
	if start >= 0 {
		fn(start, pageSize-start)
	}
}

// appendMarked appends the marked bytes of page as runs and clears the
// marks.
func appendMarked(b []byte, m *bitmap, page []byte) []byte {
	m.runs(func(off, n int) { b = appendRun(b, off, page[off:off+n]) })
	*m = bitmap{}
	return b
}

// delta is changes to a page not applied yet: marked bytes and their
// values, later changes over earlier ones.
type delta struct {
	mask bitmap
	data []byte
}

// put records a checked payload's runs.
func (d *delta) put(payload []byte) {
	if d.data == nil {
		d.data = make([]byte, pageSize)
	}
	parseRuns(payload, func(rn run) {
		copy(d.data[rn.off:], rn.data)
		d.mask.set(rn.off, len(rn.data))
	})
}

// take moves o's changes over d's.
func (d *delta) take(o *delta) {
	if o.data == nil || o.mask.empty() {
		return
	}
	if d.data == nil {
		d.data = make([]byte, pageSize)
	}
	o.mask.runs(func(off, n int) {
		copy(d.data[off:off+n], o.data[off:off+n])
		d.mask.set(off, n)
	})
	o.mask = bitmap{}
}

// payload returns d's changes as runs and empties d; nil if none.
func (d *delta) payload() []byte {
	if d.data == nil || d.mask.empty() {
		return nil
	}
	return appendMarked(nil, &d.mask, d.data)
}
