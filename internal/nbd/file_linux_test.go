package nbd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestFileBackend(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != size || f.ReadOnly() {
		t.Fatalf("size %d ro %v", f.Size(), f.ReadOnly())
	}
	ext := func(off, n int64) []Extent {
		t.Helper()
		e, err := f.Extents(off, n)
		if err != nil {
			t.Fatal(err)
		}
		return clampExtents(e, n)
	}
	if e := ext(0, size); len(e) != 1 || !e[0].Hole || !e[0].Zero {
		t.Fatalf("empty image: %+v", e)
	}
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	if _, err := f.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Length: 1 << 20, Hole: true, Zero: true}, {Length: 1 << 20}, {Length: 2 << 20, Hole: true, Zero: true}}
	if e := ext(0, size); len(e) != 3 || e[0] != want[0] || e[1] != want[1] || e[2] != want[2] {
		t.Fatalf("extents %+v, want %+v", e, want)
	}
	// A query starting inside data, and one ending inside it.
	if e := ext(1<<20+4096, 8192); len(e) != 1 || e[0] != (Extent{Length: 8192}) {
		t.Fatalf("inside data: %+v", e)
	}
	// Trim punches a hole; Zero zeroes with or without deallocating.
	if err := f.Trim(1<<20, 256<<10); err != nil {
		t.Fatal(err)
	}
	if e := ext(1<<20, 256<<10); len(e) != 1 || !e[0].Hole {
		t.Fatalf("after trim: %+v", e)
	}
	if err := f.Zero(1<<20+512<<10, 64<<10, false); err != nil {
		t.Fatal(err)
	}
	// (ZERO_RANGE keeps the blocks allocated but unwritten, which ext4's
	// SEEK_DATA reports as a hole; so only the contents are checked.)
	if err := f.Zero(1<<20+768<<10, 64<<10, true); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1<<20)
	if _, err := f.ReadAt(b, 1<<20); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		z := i < 256<<10 || (i >= 512<<10 && i < 576<<10) || (i >= 768<<10 && i < 832<<10)
		if (b[i] == 0) != z {
			t.Fatalf("byte %d is %#x after trim/zero", 1<<20+i, b[i])
		}
	}

	ro, err := OpenFile(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if !ro.ReadOnly() {
		t.Fatal("read-only file backend says writable")
	}
	if _, err := ro.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("write through an O_RDONLY backend succeeded")
	}
	if _, err := OpenFile(filepath.Dir(img), true); err == nil {
		t.Fatal("a directory opened as an image")
	}
}
