package blkback

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"shi/guest/blkfront"
	"shi/internal/devices/blkif/toolstack"
)

// benchDisk opens a 64 MiB image file (written once, so it is in the
// page cache) through guest/blkfront, on this host.
func benchDisk(b *testing.B) (*blkfront.Disk, int64) {
	r := newRig(b, nil)
	const size = 64 << 20
	img := r.image(b, "b.img", size)
	const fe = 40
	hvc := r.dom(b, fe, false)
	r.addDisk(b, fe, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(hvc, r.client(b, fe), "xvda")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	p := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(p)) {
		if _, err := d.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
	return d, size
}

// BenchmarkRandRead4kQD32: 32 goroutines reading random 4 KiB blocks.
func BenchmarkRandRead4kQD32(b *testing.B) {
	d, size := benchDisk(b)
	var left atomic.Int64
	left.Store(int64(b.N))
	b.SetBytes(4096)
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			p := make([]byte, 4096)
			for left.Add(-1) >= 0 {
				if _, err := d.ReadAt(p, rng.Int64N(size/4096)*4096); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkSeqRead1M: 1 MiB reads in order, 4 in flight.
func BenchmarkSeqRead1M(b *testing.B) {
	d, size := benchDisk(b)
	var next atomic.Int64
	b.SetBytes(1 << 20)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 1<<20)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if _, err := d.ReadAt(p, (i<<20)%size); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
