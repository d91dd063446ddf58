package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// readBufSize is the Reader's one buffer. It holds several frames, so a
// burst of small frames costs one read; and it holds the largest frame, so
// a frame never needs a second buffer.
const readBufSize = 64 << 10

// maxEmptyReads bounds reads that return neither bytes nor an error, as
// bufio does, so a broken io.Reader cannot spin us forever.
const maxEmptyReads = 100

// Reader reads frames from a stream through one fixed buffer. A frame's
// length is checked against HeaderSize and MaxData as soon as its prefix
// is in, before anything else is read: a hostile length can make the
// Reader neither allocate nor wait for more than MaxFrame bytes.
type Reader struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] is read but not yet returned
	err        error // sticky: the first error Next returned
}

// NewReader returns a Reader of frames from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, readBufSize)}
}

// Next returns the next message. Its Data aliases the Reader's buffer and
// is valid only until the next call.
//
// At a clean end of stream between frames Next returns io.EOF. A length
// out of bounds, a frame DecodeFrame refuses, or a stream that ends inside
// a frame return an error wrapping ErrMalformed. Other read errors are
// returned as they are. Errors are sticky: once Next fails it keeps
// failing the same way.
func (r *Reader) Next() (Msg, error) {
	if r.err != nil {
		return Msg{}, r.err
	}
	m, err := r.next()
	if err != nil {
		r.err = err
	}
	return m, err
}

func (r *Reader) next() (Msg, error) {
	if err := r.fill(prefixSize, true); err != nil {
		return Msg{}, err
	}
	n := binary.LittleEndian.Uint32(r.buf[r.start:])
	if n < HeaderSize || n > HeaderSize+MaxData {
		return Msg{}, fmt.Errorf("%w: frame length %d (want %d to %d)", ErrMalformed, n, HeaderSize, HeaderSize+MaxData)
	}
	size := prefixSize + int(n)
	if err := r.fill(size, false); err != nil {
		return Msg{}, err
	}
	b := r.buf[r.start+prefixSize : r.start+size]
	r.start += size
	return DecodeFrame(b)
}

// fill reads until at least n (<= len(r.buf)) unread bytes are buffered.
// atBoundary says the caller is at a frame boundary, where the end of the
// stream is clean only if nothing of a next frame has arrived.
func (r *Reader) fill(n int, atBoundary bool) error {
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
	if r.end-r.start >= n {
		return nil
	}
	if r.start+n > len(r.buf) {
		// Slide the partial frame to the front. This overwrites what the
		// previous Next returned, which its caller no longer uses.
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
	empty := 0
	for r.end-r.start < n {
		k, err := r.r.Read(r.buf[r.end:])
		r.end += k
		switch {
		case r.end-r.start >= n:
			// Enough: a reader that returned an error with its last bytes
			// returns it again on the next call (io.Reader's contract).
			return nil
		case err == io.EOF && atBoundary && r.end == r.start:
			return io.EOF
		case err == io.EOF:
			return fmt.Errorf("%w: stream ends inside a frame: %w", ErrMalformed, io.ErrUnexpectedEOF)
		case err != nil:
			return err
		case k == 0:
			if empty++; empty >= maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}
