package console

import (
	"errors"
	"testing"

	"shi/internal/abi"
	"shi/internal/ring"
)

// FuzzConsolePage feeds a page a domain (or a back end) could have
// written to the two console rings: reads never panic, never return more
// than the ring holds, and inconsistent indices are ErrCorrupt.
func FuzzConsolePage(f *testing.F) {
	page := make([]byte, abi.PAGE_SIZE)
	f.Add(page[:abi.XENCONS_SIZE], uint16(100))
	ok := make([]byte, abi.XENCONS_SIZE)
	ring.Store32(ok, abi.XENCONS_OUT_PROD, 5000)
	ring.Store32(ok, abi.XENCONS_OUT_CONS, 4000)
	f.Add(ok, uint16(2048))
	f.Fuzz(func(t *testing.T, b []byte, n uint16) {
		p := make([]byte, abi.PAGE_SIZE)
		copy(p, b)
		in, out, err := ring.Console(p)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n)
		for _, s := range []*ring.Stream{in, out} {
			got, err := s.Read(buf)
			if err != nil && !errors.Is(err, ring.ErrCorrupt) {
				t.Fatalf("read: %v", err)
			}
			if got > s.Size() || got > len(buf) {
				t.Fatalf("read %d bytes from a ring of %d", got, s.Size())
			}
			if _, err := s.Write(buf); err != nil && !errors.Is(err, ring.ErrCorrupt) {
				t.Fatalf("write: %v", err)
			}
		}
	})
}

// FuzzParseSize: the window size key is written by the back end and read
// by the domain's helper.
func FuzzParseSize(f *testing.F) {
	f.Add([]byte("80x24"))
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, r, err := ParseSize(b)
		if err == nil && (c < 1 || r < 1 || c > 10000 || r > 10000) {
			t.Fatalf("ParseSize(%q) = %d,%d", b, c, r)
		}
	})
}
