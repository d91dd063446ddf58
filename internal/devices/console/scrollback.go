package console

// Scrollback keeps the last bytes of a console's output, numbered by
// their offset in everything the console ever wrote. It is a ring of at
// most its size: memory grows with the output only until then (a quiet
// console costs little). Not safe for concurrent use (Log guards it).
type Scrollback struct {
	buf        []byte // grows to size, then is a ring
	size       int
	base       int64 // offset of buf[0] before the ring wrapped: byte o is at (o-base) % size
	start, end int64 // offsets of the oldest byte kept and just past the newest
}

// NewScrollback returns a scrollback of n bytes (at least 1) whose next
// byte will have offset start (a back end restarted over a transcript
// goes on counting).
func NewScrollback(n int, start int64) *Scrollback {
	start = max(start, 0)
	return &Scrollback{size: max(n, 1), base: start, start: start, end: start}
}

// Append adds output bytes, dropping the oldest past the capacity.
func (s *Scrollback) Append(p []byte) {
	n := int64(s.size)
	if int64(len(p)) > n { // only the last n bytes can stay
		s.end += int64(len(p)) - n
		p = p[int64(len(p))-n:]
	}
	if grow := min(len(p), s.size-len(s.buf)); grow > 0 && s.end-s.base == int64(len(s.buf)) {
		s.buf = append(s.buf, p[:grow]...)
		s.end += int64(grow)
		p = p[grow:]
	}
	if len(p) > 0 && len(s.buf) < s.size { // skipped ahead while growing
		s.buf = append(s.buf, make([]byte, s.size-len(s.buf))...)
	}
	for len(p) > 0 {
		c := copy(s.buf[(s.end-s.base)%n:], p)
		p = p[c:]
		s.end += int64(c)
	}
	s.start = max(s.start, s.end-n)
}

// Start is the offset of the oldest byte kept.
func (s *Scrollback) Start() int64 { return s.start }

// End is the offset just past the newest byte.
func (s *Scrollback) End() int64 { return s.end }

// ReadAt copies bytes from offset off into p and returns how many, and
// the offset they start at: an offset older than the scrollback starts at
// the oldest byte kept; one at or past the end gives nothing (at End).
func (s *Scrollback) ReadAt(p []byte, off int64) (int, int64) {
	off = max(off, s.start)
	if off >= s.end {
		return 0, s.end
	}
	n := int64(s.size)
	want := min(int64(len(p)), s.end-off)
	var done int64
	for done < want {
		i := (off + done - s.base) % n
		done += int64(copy(p[done:want], s.buf[i:min(int64(len(s.buf)), i+want-done)]))
	}
	return int(done), off
}
