package console

// Scrollback keeps the last bytes of a console's output, numbered by
// their offset in everything the console ever wrote. It is a ring of
// fixed size: memory never grows with the output. Not safe for concurrent
// use (Log guards it).
type Scrollback struct {
	buf        []byte
	start, end int64 // offsets of the oldest byte kept and just past the newest
}

// NewScrollback returns a scrollback of n bytes (at least 1) whose next
// byte will have offset start (a back end restarted over a transcript
// goes on counting).
func NewScrollback(n int, start int64) *Scrollback {
	start = max(start, 0)
	return &Scrollback{buf: make([]byte, max(n, 1)), start: start, end: start}
}

// Append adds output bytes, dropping the oldest past the capacity.
func (s *Scrollback) Append(p []byte) {
	n := int64(len(s.buf))
	if int64(len(p)) > n { // only the last n bytes can stay
		s.end += int64(len(p)) - n
		p = p[int64(len(p))-n:]
	}
	for len(p) > 0 {
		c := copy(s.buf[s.end%n:], p)
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
	n := int64(len(s.buf))
	want := min(int64(len(p)), s.end-off)
	var done int64
	for done < want {
		done += int64(copy(p[done:want], s.buf[(off+done)%n:]))
	}
	return int(done), off
}
