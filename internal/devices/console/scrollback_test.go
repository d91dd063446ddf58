package console

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestScrollbackModel checks Scrollback against the obvious model: all
// output kept in one slice, of which the last n bytes are readable.
func TestScrollbackModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 7, 64, 1000} {
		for _, start := range []int64{0, 12345} {
			s := NewScrollback(size, start)
			var all []byte
			for range 300 {
				p := make([]byte, r.IntN(3*size+1))
				for i := range p {
					p[i] = byte(r.Uint32())
				}
				s.Append(p)
				all = append(all, p...)
				end := start + int64(len(all))
				first := max(start, end-int64(size))
				if s.End() != end || s.Start() != first {
					t.Fatalf("size %d: start,end = %d,%d, want %d,%d", size, s.Start(), s.End(), first, end)
				}
				off := start + r.Int64N(int64(len(all))+2) - 1
				buf := make([]byte, r.IntN(2*size+1))
				n, at := s.ReadAt(buf, off)
				wantAt := min(max(off, first), end)
				wantN := min(len(buf), int(end-wantAt))
				if at != wantAt || n != wantN {
					t.Fatalf("size %d: ReadAt(%d) = %d bytes at %d, want %d at %d", size, off, n, at, wantN, wantAt)
				}
				if want := all[at-start : at-start+int64(n)]; !bytes.Equal(buf[:n], want) {
					t.Fatalf("size %d: ReadAt(%d) bytes differ", size, off)
				}
			}
		}
	}
}

// TestScrollbackGrows: a quiet console holds what it wrote, not its
// whole capacity.
func TestScrollbackGrows(t *testing.T) {
	s := NewScrollback(1<<20, 0)
	s.Append([]byte("login: "))
	if c := cap(s.buf); c > 4096 {
		t.Fatalf("7 bytes of output hold a %d-byte buffer", c)
	}
}
