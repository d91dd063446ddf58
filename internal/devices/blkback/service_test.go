package blkback

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shi/guest/blkfront"
	"shi/internal/devices/blkif"
	"shi/internal/devices/blkif/toolstack"
	"shi/internal/nbd"
)

var _ nbd.Backend = (*blkfront.Disk)(nil)

// TestDiskRandomIO drives a disk through guest/blkfront with concurrent
// random reads, writes (up to 1 MiB: indirect requests), discards and
// flushes, each goroutine on its own region, against an in-memory model;
// then checks the image file itself after Close, and a second session.
func TestDiskRandomIO(t *testing.T) {
	r := newRig(t, nil)
	const size = 32 << 20
	img := r.image(t, "d.img", size)
	const fe = 5
	hvc := r.dom(t, fe, false)
	fxs := r.client(t, fe)
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(hvc, fxs, "xvda")
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != size || d.ReadOnly() || d.SectorSize() != 512 {
		t.Fatalf("size %d read-only %v sector %d", d.Size(), d.ReadOnly(), d.SectorSize())
	}
	if flush, discard, segs := d.Features(); !flush || !discard || segs == 0 {
		t.Fatalf("features flush %v discard %v indirect %d", flush, discard, segs)
	}
	model := make([]byte, size)
	const workers = 8
	region := int64(size / workers)
	steps := 150
	if testing.Short() {
		steps = 40
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			base := int64(w) * region
			for i := range steps {
				sectors := rng.Int64N(64) + 1
				if rng.IntN(8) == 0 {
					sectors = rng.Int64N(2048) + 1 // up to 1 MiB
				}
				n := sectors * 512
				off := base + rng.Int64N((region-n)/512)*512
				switch op := rng.IntN(10); {
				case op < 4:
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					write := d.WriteAt
					if op == 0 {
						write = d.WriteAtFUA
					}
					if _, err := write(p, off); err != nil {
						errs <- err
						return
					}
					copy(model[off:], p)
				case op < 8:
					p := make([]byte, n)
					if _, err := d.ReadAt(p, off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(p, model[off:off+n]) {
						errs <- errors.New("a read differs from the model")
						return
					}
				case op == 8:
					if err := d.Discard(off, n); err != nil {
						errs <- err
						return
					}
					clear(model[off : off+n])
				default:
					if err := d.Flush(); err != nil {
						errs <- err
						return
					}
				}
				_ = i
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFor(t, "the back end to close", func() bool { return r.backState(fe, "xvda") == "6" })
	got, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("the image file differs from the model after Close (%v)", err)
	}
	// The lock was released with the session.
	if b, err := OpenFile(img, true); err != nil {
		t.Fatalf("after Close, the image is still locked: %v", err)
	} else {
		b.(interface{ Close() error }).Close()
	}

	// A second session: the front end starts over from Initialising.
	devid, _ := blkif.DevID("xvda")
	if err := blkif.WriteState(fxs, blkif.FrontPath(fe, devid), blkif.StateInitialising); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the back end to restart", func() bool { return r.backState(fe, "xvda") == "2" })
	d, err = blkfront.Open(hvc, fxs, "xvda")
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	p := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(p)) {
		if _, err := d.ReadAt(p, off); err != nil || !bytes.Equal(p, model[off:off+int64(len(p))]) {
			t.Fatalf("second session, read at %d differs (%v)", off, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDiskReadOnly serves a disk mode r: the front end learns it is
// read-only, reads work, and the file is opened (and locked) shared.
func TestDiskReadOnly(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "ro.img", 1<<20)
	if err := os.WriteFile(img, bytes.Repeat([]byte("shi!"), 1<<18), 0o600); err != nil {
		t.Fatal(err)
	}
	const fe = 6
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvdb", Path: img})
	d, err := blkfront.Open(r.dom(t, fe, false), r.client(t, fe), "xvdb")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.ReadOnly() {
		t.Fatal("a mode r disk is not read-only at the front end")
	}
	if _, discard, _ := d.Features(); discard {
		t.Fatal("a read-only disk offers discard")
	}
	p := make([]byte, 4096)
	if _, err := d.ReadAt(p, 8192); err != nil || string(p[:8]) != "shi!shi!" {
		t.Fatalf("read %q %v", p[:8], err)
	}
	if _, err := d.WriteAt(p, 0); err == nil {
		t.Fatal("a write to a read-only disk succeeded")
	}
	// Shared with another reader; never with a writer.
	if b, err := OpenFile(img, false); err != nil {
		t.Fatalf("a second reader: %v", err)
	} else {
		b.(interface{ Close() error }).Close()
	}
	if _, err := OpenFile(img, true); !errors.Is(err, ErrInUse) {
		t.Fatalf("a writer of a disk served read-only: %v", err)
	}
}

// TestDiskOneWriter gives two domains the same image writable: the
// second is refused with the back end's reason, and gets the disk once
// the first lets go.
func TestDiskOneWriter(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "shared.img", 1<<20)
	r.addDisk(t, 7, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	r.addDisk(t, 8, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	h7, x7 := r.dom(t, 7, false), r.client(t, 7)
	h8, x8 := r.dom(t, 8, false), r.client(t, 8)
	d7, err7 := blkfront.Open(h7, x7, "xvda")
	d8, err8 := blkfront.Open(h8, x8, "xvda")
	// One of the two gets it (the back end's sessions race).
	if (err7 == nil) == (err8 == nil) {
		t.Fatalf("two writers: %v, %v", err7, err8)
	}
	first, loser, lx, lh, lerr := d7, uint32(8), x8, h8, err8
	if err7 != nil {
		first, loser, lx, lh, lerr = d8, 7, x7, h7, err7
	}
	if !strings.Contains(lerr.Error(), "in use") || !errors.Is(lerr, syscall.EIO) {
		t.Fatalf("the refusal says %v", lerr)
	}
	devid, _ := blkif.DevID("xvda")
	if msg := blkif.ReadError(r.xs, blkif.BackendPath(driver, loser, devid)); !strings.Contains(msg, "in use") {
		t.Fatalf("error key %q", msg)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The loser tries again: Initialising, then the handshake.
	if err := blkif.WriteState(lx, blkif.FrontPath(loser, devid), blkif.StateInitialising); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the back end to retry", func() bool { return r.backState(loser, "xvda") == "2" })
	d, err := blkfront.Open(lh, lx, "xvda")
	if err != nil {
		t.Fatalf("after the writer closed: %v", err)
	}
	d.Close()
}

// TestDiskFlushCrash serves the disk through a CrashStore: what the
// front end flushed (Flush, or WriteAtFUA) survives a crash of the back
// end's store; what it did not, does not.
func TestDiskFlushCrash(t *testing.T) {
	var cs *CrashStore
	r := newRig(t, func(b nbd.Backend) nbd.Backend { cs = NewCrashStore(b); return cs })
	img := r.image(t, "c.img", 1<<20)
	r.addDisk(t, 9, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(r.dom(t, 9, false), r.client(t, 9), "xvda")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, b, c := bytes.Repeat([]byte{0xa}, 4096), bytes.Repeat([]byte{0xb}, 4096), bytes.Repeat([]byte{0xc}, 4096)
	if _, err := d.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAtFUA(b, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(c, 8192); err != nil {
		t.Fatal(err)
	}
	// Acknowledged flushes are in the file already, before any crash.
	got, _ := os.ReadFile(img)
	if !bytes.Equal(got[:4096], a) || !bytes.Equal(got[4096:8192], b) || !bytes.Equal(got[8192:12288], make([]byte, 4096)) {
		t.Fatal("the file does not hold exactly the flushed writes")
	}
	if cs.Pending() != 1 {
		t.Fatalf("%d changes pending, want the one unflushed write", cs.Pending())
	}
	cs.Crash()
	p := make([]byte, 12288)
	if _, err := d.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p[:8192], append(bytes.Clone(a), b...)) || !bytes.Equal(p[8192:], make([]byte, 4096)) {
		t.Fatal("after the crash, the disk does not hold exactly the flushed writes")
	}
}

// TestDiskFrontGone: the front end's domain dies mid-session; the back
// end ends the session, flushes, releases the image, and removes its
// directory once the domain's directory goes.
func TestDiskFrontGone(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "g.img", 1<<20)
	const fe = 10
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(r.dom(t, fe, false), r.client(t, fe), "xvda")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	r.h.RemoveDomain(fe)
	waitFor(t, "the back end to let go of the image", func() bool {
		b, err := OpenFile(img, true)
		if err == nil {
			b.(interface{ Close() error }).Close()
		}
		return err == nil
	})
	// Closed follows the release of the image.
	waitFor(t, "the back end to go to Closed", func() bool { return r.backState(fe, "xvda") == "6" })
	r.xs.Rm("/local/domain/10")
	waitFor(t, "the back-end directory to go", func() bool { return r.backState(fe, "xvda") == "" })
}

// TestDiskHandedOn: a domain that had an image writable is destroyed
// and a new one names the same image at once, while the first one's
// session still flushes and closes it: the new one gets the disk (as the
// directory already allowed its create), not a refusal.
func TestDiskHandedOn(t *testing.T) {
	var n atomic.Int32
	r := newRig(t, func(b nbd.Backend) nbd.Backend {
		if n.Add(1) == 1 {
			return slowClose{b, 500 * time.Millisecond} // the first session's close
		}
		return b
	})
	img := r.image(t, "h.img", 1<<20)
	r.addDisk(t, 12, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(r.dom(t, 12, false), r.client(t, 12), "xvda")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	r.h.RemoveDomain(12)
	r.xs.Rm("/local/domain/12")
	r.addDisk(t, 13, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d2, err := blkfront.Open(r.dom(t, 13, false), r.client(t, 13), "xvda")
	if err != nil {
		t.Fatalf("the image's next domain: %v", err)
	}
	defer d2.Close()
	p := make([]byte, 4096)
	if _, err := d2.ReadAt(p, 0); err != nil || p[0] != 7 {
		t.Fatalf("read %d %v: the first domain's write is not there", p[0], err)
	}
}

// slowClose is a store whose Close takes a while (a flush to a slow disk).
type slowClose struct {
	nbd.Backend
	delay time.Duration
}

func (s slowClose) Close() error {
	time.Sleep(s.delay)
	return s.Backend.(io.Closer).Close()
}

// TestDiskBackendStops: the driver's Service stops; the front end's
// requests fail with EIO, promptly.
func TestDiskBackendStops(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "s.img", 1<<20)
	r.addDisk(t, 11, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(r.dom(t, 11, false), r.client(t, 11), "xvda")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r.stop()
	start := time.Now()
	p := make([]byte, 4096)
	for {
		_, err := d.ReadAt(p, 0)
		if err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read after the back end stopped: %v", err)
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("reads still succeed 10 s after the back end stopped")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDiskUnplugged: the toolstack removes the back-end directory of a
// connected disk; the back end lets go of the image and the front end's
// requests fail with EIO.
func TestDiskUnplugged(t *testing.T) {
	r := newRig(t, nil)
	img := r.image(t, "u.img", 1<<20)
	const fe = 12
	r.addDisk(t, fe, toolstack.Spec{Dev: "xvda", Path: img, Writable: true})
	d, err := blkfront.Open(r.dom(t, fe, false), r.client(t, fe), "xvda")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	devid, _ := blkif.DevID("xvda")
	if err := r.xs.Rm(blkif.BackendPath(driver, fe, devid)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the back end to let go of the image", func() bool {
		b, err := OpenFile(img, true)
		if err == nil {
			b.(interface{ Close() error }).Close()
		}
		return err == nil
	})
	waitFor(t, "the front end to fail", func() bool {
		_, err := d.ReadAt(make([]byte, 512), 0)
		return errors.Is(err, syscall.EIO)
	})
}
