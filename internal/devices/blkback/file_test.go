package blkback

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestVectored(t *testing.T) {
	// Short transfers resume where they stopped, inside a buffer.
	src := bytes.Repeat([]byte("0123456789"), 10)
	bufs := [][]byte{make([]byte, 7), make([]byte, 30), make([]byte, 1), make([]byte, 62)}
	want := [][]byte{src[:7], src[7:37], src[37:38], src[38:]}
	calls := 0
	err := vectored(append([][]byte(nil), bufs...), 0, func(iov [][]byte, at int64) (int, error) {
		calls++
		n := 0
		for _, b := range iov {
			c := copy(b, src[at+int64(n):min(at+int64(n)+int64(len(b)), at+13)]) // at most 13 bytes a call
			n += c
			if c < len(b) {
				break
			}
		}
		return n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range bufs {
		if !bytes.Equal(bufs[i], want[i]) {
			t.Fatalf("buffer %d = %q, want %q", i, bufs[i], want[i])
		}
	}
	if calls != 8 {
		t.Fatalf("%d calls, want 8", calls)
	}
}

func TestFileVectors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "v.img")
	if err := os.WriteFile(p, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	f := b.(*lockedFile)
	defer f.Close()
	a, c := bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 1024)
	if err := f.WritevAt([][]byte{a, c}, 4096); err != nil {
		t.Fatal(err)
	}
	x, y := make([]byte, 512), make([]byte, 1024)
	if err := f.ReadvAt([][]byte{x, y}, 4096); err != nil || !bytes.Equal(x, a) || !bytes.Equal(y, c) {
		t.Fatalf("read back: %v", err)
	}
	// Past the end of the file: zeroes.
	z := bytes.Repeat([]byte{9}, 1024)
	if err := f.ReadvAt([][]byte{z}, 8192-512); err != nil || !bytes.Equal(z, make([]byte, 1024)) {
		t.Fatalf("read past the end: %v %v", err, z[:4])
	}
	ro, err := OpenFile(filepath.Join(t.TempDir(), "missing.img"), false)
	if err == nil {
		ro.(*lockedFile).Close()
		t.Fatal("opened a missing image")
	}
	if err := os.Chmod(p, 0o444); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := OpenFile(p, true); err == nil || errors.Is(err, ErrInUse) {
		t.Fatalf("a read-only file served writable: %v", err)
	}
	r, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.(*lockedFile).Close()
	if err := r.(*lockedFile).WritevAt([][]byte{a}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("vectored write to a read-only image: %v", err)
	}
}
