package ring

import (
	"errors"

	"shi/internal/abi"
)

// ErrCorrupt means a byte stream's indices claim more data than the ring
// holds. Xen's console and vchan treat such a ring as empty (or full);
// callers may do the same or disconnect.
var ErrCorrupt = errors.New("ring: stream indices are inconsistent")

// Stream is one direction of a byte-stream ring: a power-of-two data area
// and free-running u32 producer and consumer indices, each written by one
// side only. Byte i lives at data[i & (len(data)-1)]. The producer uses
// Write and Writable, the consumer Read and Readable. Neither blocks.
type Stream struct {
	data             []byte
	mask             uint32
	idx              []byte
	consOff, prodOff int

	// Wrote, if set, is told of every region of shared memory that Read
	// and Write change: the memory model across hosts ships exactly
	// those bytes (guest/link's explicit mode).
	Wrote func(b []byte)
}

// NewStream describes a stream whose data area is data and whose indices
// are the u32s at idx[consOff:] and idx[prodOff:]; data and idx may be the
// same page.
func NewStream(data, idx []byte, consOff, prodOff int) (*Stream, error) {
	n := len(data)
	if n == 0 || n&(n-1) != 0 || uint64(n) > 1<<31 || !Aligned(idx) ||
		consOff%4 != 0 || prodOff%4 != 0 || consOff+4 > len(idx) || prodOff+4 > len(idx) {
		return nil, ErrGeometry
	}
	return &Stream{data: data, mask: uint32(n - 1), idx: idx, consOff: consOff, prodOff: prodOff}, nil
}

// Console returns the two streams of a struct xencons_interface page: in
// (backend writes, guest reads) and out (guest writes, backend reads).
func Console(page []byte) (in, out *Stream, err error) {
	if len(page) < abi.XENCONS_SIZE {
		return nil, nil, ErrGeometry
	}
	in, err = NewStream(page[abi.XENCONS_IN_OFF:abi.XENCONS_IN_OFF+abi.XENCONS_IN_SIZE], page, abi.XENCONS_IN_CONS, abi.XENCONS_IN_PROD)
	if err != nil {
		return nil, nil, err
	}
	out, err = NewStream(page[abi.XENCONS_OUT_OFF:abi.XENCONS_OUT_OFF+abi.XENCONS_OUT_SIZE], page, abi.XENCONS_OUT_CONS, abi.XENCONS_OUT_PROD)
	return in, out, err
}

// Size is the data area's size in bytes.
func (s *Stream) Size() int { return len(s.data) }

func (s *Stream) indices() (cons, prod, used uint32, err error) {
	cons = Load32(s.idx, s.consOff)
	prod = Load32(s.idx, s.prodOff)
	used = prod - cons
	if used > s.mask+1 {
		return cons, prod, 0, ErrCorrupt
	}
	return cons, prod, used, nil
}

// Readable is how many bytes the consumer can read now.
func (s *Stream) Readable() (int, error) {
	_, _, used, err := s.indices()
	return int(used), err
}

// Writable is how many bytes the producer can write now.
func (s *Stream) Writable() (int, error) {
	_, _, used, err := s.indices()
	if err != nil {
		return 0, err
	}
	return int(s.mask + 1 - used), nil
}

// Read copies up to len(p) available bytes out of the ring and publishes
// the new consumer index. It returns 0, nil when the ring is empty.
func (s *Stream) Read(p []byte) (int, error) {
	cons, _, used, err := s.indices()
	if err != nil {
		return 0, err
	}
	n := uint32(min(len(p), int(used)))
	if n == 0 {
		return 0, nil
	}
	off := cons & s.mask
	c := copy(p[:n], s.data[off:])
	copy(p[c:n], s.data)
	Store32(s.idx, s.consOff, cons+n)
	if s.Wrote != nil {
		s.Wrote(s.idx[s.consOff : s.consOff+4])
	}
	return int(n), nil
}

// Write copies as much of p as fits into the ring and publishes the new
// producer index. It returns 0, nil when the ring is full.
func (s *Stream) Write(p []byte) (int, error) {
	_, prod, used, err := s.indices()
	if err != nil {
		return 0, err
	}
	n := uint32(min(len(p), int(s.mask+1-used)))
	if n == 0 {
		return 0, nil
	}
	off := prod & s.mask
	c := copy(s.data[off:], p[:n])
	copy(s.data, p[c:n])
	Store32(s.idx, s.prodOff, prod+n)
	if s.Wrote != nil {
		s.Wrote(s.data[off : off+uint32(c)])
		if uint32(c) < n {
			s.Wrote(s.data[:n-uint32(c)])
		}
		s.Wrote(s.idx[s.prodOff : s.prodOff+4])
	}
	return int(n), nil
}
