package ring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"shi/internal/abi"
)

func newTestStream(t testing.TB, size int, start uint32) (*Stream, []byte) {
	idx := AlignedBytes(8)
	Store32(idx, 0, start)
	Store32(idx, 4, start)
	s, err := NewStream(make([]byte, size), idx, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	return s, idx
}

func TestStreamGeometry(t *testing.T) {
	idx := AlignedBytes(8)
	for _, tc := range []struct {
		size       int
		cons, prod int
		ok         bool
	}{
		{1024, 0, 4, true},
		{1000, 0, 4, false},
		{0, 0, 4, false},
		{1024, 2, 4, false},
		{1024, 0, 8, false},
	} {
		_, err := NewStream(make([]byte, tc.size), idx, tc.cons, tc.prod)
		if (err == nil) != tc.ok {
			t.Errorf("NewStream(size %d, %d, %d) err = %v", tc.size, tc.cons, tc.prod, err)
		}
	}
}

// TestStreamAgainstModel checks random writes and reads, across the 2^32
// wrap, against a bytes.Buffer.
func TestStreamAgainstModel(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 1))
		size := 1 << (4 + r.IntN(8))
		s, idx := newTestStream(t, size, -uint32(r.IntN(3*size)))
		var model bytes.Buffer
		var counter byte
		for step := range 2000 {
			if w, err := s.Writable(); err != nil || w != size-model.Len() {
				t.Fatalf("seed %d step %d: writable %d %v, want %d", seed, step, w, err, size-model.Len())
			}
			if n, err := s.Readable(); err != nil || n != model.Len() {
				t.Fatalf("seed %d step %d: readable %d %v, want %d", seed, step, n, err, model.Len())
			}
			p := make([]byte, r.IntN(size+size/2))
			if r.IntN(2) == 0 {
				for i := range p {
					p[i] = counter
					counter++
				}
				n, err := s.Write(p)
				if err != nil || n != min(len(p), size-model.Len()) {
					t.Fatalf("seed %d step %d: write %d %v", seed, step, n, err)
				}
				counter -= byte(len(p) - n)
				model.Write(p[:n])
			} else {
				n, err := s.Read(p)
				want := model.Next(min(len(p), model.Len()))
				if err != nil || !bytes.Equal(p[:n], want) {
					t.Fatalf("seed %d step %d: read %x %v, want %x", seed, step, p[:n], err, want)
				}
			}
		}
		if Load32(idx, 4)-Load32(idx, 0) != uint32(model.Len()) {
			t.Fatalf("seed %d: indices disagree with the model", seed)
		}
	}
}

func TestStreamCorrupt(t *testing.T) {
	s, idx := newTestStream(t, 1024, 10)
	Store32(idx, 4, 10+1025) // prod more than a ring ahead
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read err = %v", err)
	}
	if _, err := s.Write([]byte{1}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("write err = %v", err)
	}
	Store32(idx, 4, 9) // prod behind cons
	if _, err := s.Readable(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("readable err = %v", err)
	}
}

func TestConsoleLayout(t *testing.T) {
	page := AlignedBytes(4096)
	in, out, err := Console(page)
	if err != nil {
		t.Fatal(err)
	}
	if in.Size() != 1024 || out.Size() != 2048 {
		t.Fatalf("sizes %d/%d", in.Size(), out.Size())
	}
	out.Write([]byte("hello"))
	if string(page[1024:1029]) != "hello" || Load32(page, abi.XENCONS_OUT_PROD) != 5 {
		t.Errorf("out ring bytes %q prod %d", page[1024:1029], Load32(page, abi.XENCONS_OUT_PROD))
	}
	in.Write([]byte("k"))
	if page[0] != 'k' || Load32(page, abi.XENCONS_IN_PROD) != 1 {
		t.Error("in ring misplaced")
	}
	buf := make([]byte, 8)
	if n, _ := out.Read(buf); string(buf[:n]) != "hello" || Load32(page, abi.XENCONS_OUT_CONS) != 5 {
		t.Errorf("read back %q", buf[:n])
	}
}

// FuzzStream lets the peer choose both indices and the ring contents: reads
// and writes must stay inside the ring and never panic.
func FuzzStream(f *testing.F) {
	f.Add(uint32(0), uint32(3), 16, []byte("abc"))
	f.Add(uint32(0xfffffffe), uint32(0x10), 16, []byte{})
	f.Fuzz(func(t *testing.T, cons, prod uint32, n int, data []byte) {
		s, idx := newTestStream(t, 1024, 0)
		Store32(idx, 0, cons)
		Store32(idx, 4, prod)
		copy(s.data, data)
		buf := make([]byte, n&0xfff)
		got, err := s.Read(buf)
		if err == nil && (got > 1024 || uint32(got) > prod-cons) {
			t.Fatalf("read %d bytes with cons %d prod %d", got, cons, prod)
		}
		if err != nil && got != 0 {
			t.Fatal("read data from a corrupt ring")
		}
		wrote, err := s.Write(buf)
		if err == nil {
			if used := Load32(idx, 4) - Load32(idx, 0); used > 1024 {
				t.Fatalf("write overfilled the ring: %d used (wrote %d)", used, wrote)
			}
		}
	})
}
