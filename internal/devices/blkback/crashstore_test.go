package blkback

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"shi/internal/nbd"
)

func TestCrashStore(t *testing.T) {
	base := nbd.NewMem(1<<20, false)
	c := NewCrashStore(base)
	a := bytes.Repeat([]byte{0xaa}, 4096)
	b := bytes.Repeat([]byte{0xbb}, 4096)
	if _, err := c.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(b, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(b[:512], 512); err != nil { // over flushed data
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	c.ReadAt(got, 0)
	want := append(bytes.Clone(a), b...)
	copy(want[512:1024], b)
	if !bytes.Equal(got, want) {
		t.Fatal("before the crash, reads do not see the pending writes")
	}
	if under := readAll(t, base, 0, 8192); !bytes.Equal(under[4096:], make([]byte, 4096)) || !bytes.Equal(under[:4096], a) {
		t.Fatal("an unflushed write reached the underlying store")
	}
	c.Crash()
	c.ReadAt(got, 0)
	if !bytes.Equal(got[:4096], a) {
		t.Fatal("a flushed write was lost at the crash")
	}
	if !bytes.Equal(got[4096:], make([]byte, 4096)) {
		t.Fatal("an unflushed write survived the crash")
	}
}

func readAll(t *testing.T, b nbd.Backend, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := b.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCrashStoreModel runs random writes, zeroes, flushes and crashes
// over a sparse file against two models: what was written, and what was
// written up to the last flush.
func TestCrashStoreModel(t *testing.T) {
	const size = 256 << 10
	path := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	f, err := nbd.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := NewCrashStore(f)
	live, durable := make([]byte, size), make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		off := rng.Int64N(size)
		n := rng.Int64N(min(size-off, 20000)) + 0
		switch r := rng.IntN(20); {
		case r < 12:
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if _, err := c.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(live[off:], p)
		case r < 15:
			if err := c.Zero(off, n, r == 14); err != nil {
				t.Fatal(err)
			}
			clear(live[off : off+n])
		case r < 18:
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			copy(durable, live)
		default:
			c.Crash()
			copy(live, durable)
		}
		if got := readAll(t, c, 0, size); !bytes.Equal(got, live) {
			t.Fatalf("step %d: reads differ from the model", i)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, live) {
		t.Fatalf("the file after the last flush differs from the model (%v)", err)
	}
	if ex, err := c.Extents(0, size); err != nil || len(ex) == 0 {
		t.Fatalf("extents %v %v", ex, err)
	}
}

func TestCrashStoreReadOnly(t *testing.T) {
	c := NewCrashStore(nbd.NewMem(4096, true))
	if _, err := c.WriteAt(make([]byte, 512), 0); err == nil {
		t.Fatal("a write to a read-only store succeeded")
	}
	if _, err := c.WriteAt(make([]byte, 512), 4000); err == nil {
		t.Fatal("a write past the end succeeded")
	}
}
