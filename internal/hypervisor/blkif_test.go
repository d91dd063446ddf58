package hypervisor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shi/guest/blkfront"
	"shi/guest/evtchn"
	"shi/guest/gnttab"
	gring "shi/guest/ring"
	"shi/guest/xs"
	"shi/guest/xs/xstest"
	"shi/internal/abi"
	"shi/internal/devices/blkback"
	"shi/internal/devices/blkif"
	"shi/internal/devices/blkif/toolstack"
	"shi/internal/nbd"
	"shi/internal/ring"
	"shi/internal/xenstore"
)

// The front end must serve as an NBD export's backend.
var _ nbd.Backend = (*blkfront.Disk)(nil)

// blkEnv is a cluster of hosts a and b with one fake XenStore: the front
// end's domain 1 on a, the driver domain 2 (blkback.Service) on a
// (local) or on b (remote), serving images from stores of the test's.
type blkEnv struct {
	c      *cluster
	xs     *xstest.Server
	fe, be DomID
	remote bool

	mu     sync.Mutex
	stores map[string]nbd.Backend // by image path
}

func newBlkEnv(t *testing.T, remote bool) *blkEnv {
	e := &blkEnv{c: newCluster(t, "a", "b"), xs: xstest.NewServer(), fe: 1, be: 2, remote: remote,
		stores: map[string]nbd.Backend{}}
	t.Cleanup(func() { e.xs.Close() })
	e.c.dom(t, "a", e.fe)
	e.c.dom(t, e.beHost(), e.be)
	svc := blkback.NewService(blkback.ServiceConfig{
		Hypervisor: e.c.conns[e.be],
		XenStore:   e.xsClient(t),
		Logger:     slog.New(slog.NewTextHandler(e.c.log, nil)).With("blkback", e.be),
		Open:       e.open,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("blkback.Service.Run did not return")
		}
	})
	return e
}

func (e *blkEnv) beHost() string {
	if e.remote {
		return "b"
	}
	return "a"
}

func (e *blkEnv) open(path string, writable bool) (nbd.Backend, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stores[path]
	if s == nil {
		return nil, fmt.Errorf("no image %s: %w", path, os.ErrNotExist)
	}
	return s, nil
}

func (e *blkEnv) xsClient(t *testing.T) *xs.Client {
	t.Helper()
	nc, err := e.xs.Pair()
	if err != nil {
		t.Fatal(err)
	}
	c := xs.New(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

// addDisk writes the toolstack's keys of a disk served from store (none:
// the image is missing), in one transaction as the toolstack does.
func (e *blkEnv) addDisk(t *testing.T, dev string, store nbd.Backend, writable bool) {
	t.Helper()
	path := "/images/" + dev + "-" + strconv.Itoa(int(e.be)) + ".img"
	if store != nil {
		e.mu.Lock()
		e.stores[path] = store
		e.mu.Unlock()
	}
	cmds, err := toolstack.Keys(uint32(e.fe), uint32(e.be), toolstack.Spec{Dev: dev, Path: path, Writable: writable})
	if err != nil {
		t.Fatal(err)
	}
	err = e.xsClient(t).Transaction(func(tx *xs.Tx) error {
		for _, cmd := range cmds {
			var err error
			switch cmd.Op {
			case xenstore.OpWrite:
				err = tx.Write(cmd.Path, cmd.Value)
			case xenstore.OpSetPerms:
				var ps []xs.Perm
				for _, p := range cmd.Perms {
					ps = append(ps, xs.Perm{Domid: p.Dom, Access: xs.Access(p.Bits)})
				}
				err = tx.SetPerms(cmd.Path, ps...)
			default:
				err = fmt.Errorf("toolstack command %v", cmd.Op)
			}
			if err != nil {
				return fmt.Errorf("%v %s: %w", cmd.Op, cmd.Path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openDisk adds a disk and connects the front end to it.
func (e *blkEnv) openDisk(t *testing.T, dev string, store nbd.Backend, writable bool) *blkfront.Disk {
	return e.openDiskOptions(t, dev, store, writable, blkfront.Options{})
}

func (e *blkEnv) openDiskOptions(t *testing.T, dev string, store nbd.Backend, writable bool, opts blkfront.Options) *blkfront.Disk {
	t.Helper()
	e.addDisk(t, dev, store, writable)
	opts.Timeout = 20 * time.Second
	d, err := blkfront.OpenOptions(e.c.conns[e.fe], e.xsClient(t), dev, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestBlkifModel: concurrent random reads and writes of many sizes (up
// to indirect requests), each worker in a region of its own, checked
// against an in-memory model, then the whole store against the model.
func TestBlkifModel(t *testing.T) {
	for _, where := range []string{"local", "remote", "remote small"} {
		t.Run(where, func(t *testing.T) {
			e := newBlkEnv(t, where != "local")
			const size, workers = 16 << 20, 8
			store := nbd.NewMem(size, false)
			var opts blkfront.Options
			small := where == "remote small"
			if small {
				// One page of ring (32 requests) and 24 pool pages:
				// submitters wait for ids and pages all the time.
				opts = blkfront.Options{RingPageOrder: -1, PoolPages: 24}
			}
			d := e.openDiskOptions(t, "xvda", store, true, opts)
			if d.Size() != size || d.SectorSize() != 512 || d.ReadOnly() {
				t.Fatalf("size %d, sector %d, read-only %v", d.Size(), d.SectorSize(), d.ReadOnly())
			}
			flush, discard, segs := d.Features()
			c := e.xsClient(t)
			devid, _ := blkif.DevID("xvda")
			maxOrder, _ := c.Read(blkif.BackendPath(uint32(e.be), uint32(e.fe), devid) + "/" + blkif.KeyMaxRingPageOrder)
			order, _ := c.Read(blkif.FrontPath(uint32(e.fe), devid) + "/" + blkif.KeyRingPageOrder)
			t.Logf("flush %v, discard %v, %d segments per request, ring-page-order %q (the back end's max %q)", flush, discard, segs, order, maxOrder)
			if !small && len(maxOrder) > 0 && string(maxOrder) != "0" && string(order) != "1" {
				t.Errorf("the back end offers ring-page-order up to %s, the front end chose %q", maxOrder, order)
			}
			if small && len(order) != 0 {
				t.Errorf("asked for a single-page ring, wrote ring-page-order %q", order)
			}
			if segs <= abi.BLKIF_MAX_SEGMENTS_PER_REQUEST {
				t.Errorf("no indirect descriptors: %d segments per request", segs)
			}
			model := make([]byte, size)
			ops := 150
			start := time.Now()
			var wg sync.WaitGroup
			errc := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					region := size / workers
					base := w * region
					mine := model[base : base+region]
					for i := range ops {
						n := 512 * (1 + rng.IntN(8))
						if i%5 == 0 {
							n = 512 * (1 + rng.IntN(2048)) // up to 1 MiB: indirect and split
						}
						off := rng.IntN((region-n)/512) * 512
						if rng.IntN(2) == 0 {
							p := randBytes(rng, n)
							if _, err := d.WriteAt(p, int64(base+off)); err != nil {
								errc <- err
								return
							}
							copy(mine[off:], p)
							continue
						}
						p := make([]byte, n)
						if _, err := d.ReadAt(p, int64(base+off)); err != nil {
							errc <- err
							return
						}
						if !bytes.Equal(p, mine[off:off+n]) {
							errc <- fmt.Errorf("worker %d: read of %d bytes at %d differs from the model", w, n, base+off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			t.Logf("%d ops in %v", workers*ops, time.Since(start).Round(time.Millisecond))
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := store.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatal("the store differs from the model")
			}
			// Out of range and misaligned requests are refused before
			// they reach the ring.
			if _, err := d.ReadAt(make([]byte, 100), 0); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("misaligned read: %v", err)
			}
			if _, err := d.WriteAt(make([]byte, 1024), size-512); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("write past the end: %v", err)
			}
			if n, err := d.ReadAt(make([]byte, 1024), size-512); n != 512 || err != io.EOF {
				t.Errorf("read across the end: %d %v", n, err)
			}
			// Discard reaches the store (Mem's Trim zeroes).
			if err := d.Discard(0, 1<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := store.ReadAt(got[:1<<20], 0); err != nil || !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) {
				t.Fatalf("discarded range: %v", err)
			}
			if err := d.Zero(4096, 8192, false); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBlkifReadOnly: a disk of mode r reads, and refuses writes and
// discards with EROFS without asking the back end.
func TestBlkifReadOnly(t *testing.T) {
	e := newBlkEnv(t, true)
	store := nbd.NewMem(1<<20, true)
	d := e.openDisk(t, "xvdb", store, false)
	if !d.ReadOnly() {
		t.Fatal("not read-only")
	}
	if _, err := d.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 4096), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write: %v", err)
	}
	if err := d.Discard(0, 4096); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("discard: %v", err)
	}
}

// TestBlkifFlushCrash: what was written and flushed (or written FUA)
// survives a crash of the back end's store; what was only written may
// not.
func TestBlkifFlushCrash(t *testing.T) {
	for _, where := range []string{"local", "remote"} {
		t.Run(where, func(t *testing.T) {
			e := newBlkEnv(t, where == "remote")
			store := blkback.NewCrashStore(nbd.NewMem(1<<20, false))
			d := e.openDisk(t, "xvda", store, true)
			rng := rand.New(rand.NewPCG(1, 2))
			flushed, fua, unflushed := randBytes(rng, 64<<10), randBytes(rng, 4096), randBytes(rng, 8192)
			if _, err := d.WriteAt(flushed, 0); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAtFUA(fua, 128<<10); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteAt(unflushed, 256<<10); err != nil {
				t.Fatal(err)
			}
			if store.Pending() == 0 {
				t.Fatal("the unflushed write is already durable: the crash shows nothing")
			}
			store.Crash()
			for _, c := range []struct {
				off  int64
				want []byte
			}{{0, flushed}, {128 << 10, fua}, {256 << 10, make([]byte, len(unflushed))}} {
				got := make([]byte, len(c.want))
				if _, err := d.ReadAt(got, c.off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, c.want) {
					t.Errorf("at %d after the crash: not what was flushed", c.off)
				}
			}
		})
	}
}

// TestBlkifBackendGone: the back end's domain or its host goes, or the
// back end's directory is removed, while requests are in flight: each
// fails with EIO promptly, and so does every later one.
func TestBlkifBackendGone(t *testing.T) {
	for _, tc := range []struct {
		name       string
		remote     bool
		hostDies   bool
		dirRemoved bool // the toolstack removes the back end's directory
	}{
		{"local domain dies", false, false, false},
		{"remote domain dies", true, false, false},
		{"remote host dies", true, true, false},
		{"back end removed", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newBlkEnv(t, tc.remote)
			d := e.openDisk(t, "xvda", nbd.NewMem(8<<20, false), true)
			var wg sync.WaitGroup
			stop := make(chan struct{})
			errs := make(chan error, 16)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := make([]byte, 64<<10)
					for i := 0; ; i++ {
						off := int64((w*16 + i%16) * len(p))
						var err error
						if i%2 == 0 {
							_, err = d.WriteAt(p, off)
						} else {
							_, err = d.ReadAt(p, off)
						}
						if err != nil {
							errs <- err
							return
						}
						select {
						case <-stop:
							errs <- nil
							return
						default:
						}
					}
				}()
			}
			time.Sleep(200 * time.Millisecond) // requests in flight
			start := time.Now()
			switch {
			case tc.dirRemoved:
				devid, _ := blkif.DevID("xvda")
				if err := e.xsClient(t).Rm(blkif.BackendPath(uint32(e.be), uint32(e.fe), devid)); err != nil {
					t.Fatal(err)
				}
			case tc.hostDies:
				e.c.n.kill("b")
			default:
				e.c.hvs[e.beHost()].RemoveDomain(e.be)
			}
			timeout := time.After(15 * time.Second)
			for range 8 {
				select {
				case err := <-errs:
					if !errors.Is(err, syscall.EIO) {
						t.Fatalf("a request in flight: %v, want EIO", err)
					}
				case <-timeout:
					close(stop)
					buf := make([]byte, 1<<20)
					t.Logf("%s", buf[:runtime.Stack(buf, true)])
					t.Fatal("requests hang after the back end went")
				}
			}
			t.Logf("every worker saw EIO %v after: %v", time.Since(start).Round(time.Millisecond), d.Err())
			close(stop)
			wg.Wait()
			if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("a later read: %v", err)
			}
			if err := d.Flush(); !errors.Is(err, syscall.EIO) {
				t.Fatalf("a later flush: %v", err)
			}
			done := make(chan struct{})
			go func() { d.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Close hangs after the back end went")
			}
		})
	}
}

// TestBlkifClose: Close goes through Closing to Closed with the back
// end, which lets the image go; later requests fail with ErrClosed; the
// disk can be opened again.
func TestBlkifClose(t *testing.T) {
	e := newBlkEnv(t, true)
	d := e.openDisk(t, "xvda", nbd.NewMem(1<<20, false), true)
	want := bytes.Repeat([]byte("session1"), 512)
	if _, err := d.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, blkfront.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	c := e.xsClient(t)
	devid, _ := blkif.DevID("xvda")
	if s, err := blkif.ReadState(c, blkif.FrontPath(uint32(e.fe), devid)); err != nil || s != blkif.StateClosed {
		t.Fatalf("front state %v %v", s, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := blkif.WaitState(ctx, c, blkif.BackendPath(uint32(e.be), uint32(e.fe), devid), blkif.StateIs(blkif.StateClosed)); err != nil {
		t.Fatalf("back end state: %v", err)
	}
	// Opened again (a single-page ring this time), the disk holds what
	// the first session wrote.
	d2, err := blkfront.OpenOptions(e.c.conns[e.fe], e.xsClient(t), "xvda", blkfront.Options{Timeout: 10 * time.Second, RingPageOrder: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	got := make([]byte, 4096)
	if _, err := d2.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the second session reads %q... (%v)", got[:8], err)
	}
}

// TestBlkifRefused: a back end that cannot open the image says why, and
// Open fails with its message.
func TestBlkifRefused(t *testing.T) {
	e := newBlkEnv(t, false)
	e.addDisk(t, "xvdc", nil, true)
	_, err := blkfront.OpenOptions(e.c.conns[e.fe], e.xsClient(t), "xvdc", blkfront.Options{Timeout: 10 * time.Second})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("xvdc-2.img")) {
		t.Fatalf("open of a missing image: %v", err)
	}
	t.Logf("refused: %v", err)
}

// hostileBack is the back end's half of the handshake for disk dev of
// domain e.fe, served by a new domain be of host a that answers each
// request with what answer makes of it: a back end that breaks the
// protocol, for the front end to survive.
func (e *blkEnv) hostileBack(t *testing.T, be DomID, dev string, answer func(req abi.BlkifRequest, n int) (rsp abi.BlkifResponse, extra uint32)) {
	t.Helper()
	hvc := e.c.dom(t, "a", be)
	realBe := e.be
	e.be = be
	e.addDisk(t, dev, nbd.NewMem(1<<20, false), true)
	e.be = realBe
	devid, _ := blkif.DevID(dev)
	c := e.xsClient(t)
	fdir, bdir := blkif.FrontPath(uint32(e.fe), devid), blkif.BackendPath(uint32(be), uint32(e.fe), devid)
	if err := blkif.WriteState(c, bdir, blkif.StateInitWait); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		if _, err := blkif.WaitState(ctx, c, fdir, blkif.StateIs(blkif.StateInitialised)); err != nil {
			t.Error(err)
			return
		}
		num := func(key string) int {
			v, _ := c.Read(fdir + "/" + key)
			n, _ := strconv.Atoi(string(v))
			return n
		}
		evt, err := evtchn.Open(hvc)
		if err != nil {
			t.Error(err)
			return
		}
		defer evt.Close()
		port, err := evt.BindInterdomain(e.fe, evtchn.Port(num(blkif.KeyEventChannel)))
		if err != nil {
			t.Error(err)
			return
		}
		g := gnttab.Open(hvc)
		m, err := g.Map(e.fe, []gnttab.Ref{gnttab.Ref(num(blkif.KeyRingRef))}, true)
		if err != nil {
			t.Error(err)
			return
		}
		defer g.Unmap(m)
		back, err := gring.NewBack(m.Bytes(), abi.BlkifRequestSize, evt, port)
		if err != nil {
			t.Error(err)
			return
		}
		for _, kv := range [][2]string{{blkif.KeySectors, "2048"}, {blkif.KeySectorSize, "512"}, {blkif.KeyInfo, "0"},
			{blkif.KeyFeatureFlushCache, "1"}, {blkif.KeyState, blkif.StateConnected.String10()}} {
			if err := c.Write(bdir+"/"+kv[0], []byte(kv[1])); err != nil {
				t.Error(err)
				return
			}
		}
		for n := 0; ctx.Err() == nil; {
			if err := back.WaitRequests(time.Now().Add(50 * time.Millisecond)); err != nil {
				continue
			}
			for {
				slot, err := back.NextRequest()
				if err != nil || slot == nil {
					break
				}
				req, _ := abi.DecodeBlkifRequest(slot)
				rsp, extra := answer(req, n)
				n++
				rsp.Encode(back.NextResponse())
				back.Push()
				if extra > 0 {
					sh := m.Bytes()
					ring.Store32(sh, abi.RING_RSP_PROD, ring.Load32(sh, abi.RING_RSP_PROD)+extra)
					evt.Notify(port)
				}
			}
		}
	}()
}

// TestBlkifHostile: a back end that answers a request it was not given,
// with the wrong operation or with more responses than requests fails
// the disk with ErrProtocol (EIO), promptly; one that answers a status
// blkif.h does not define fails that request with EIO and no other.
// Nothing panics or hangs.
func TestBlkifHostile(t *testing.T) {
	ok := func(req abi.BlkifRequest) abi.BlkifResponse {
		return abi.BlkifResponse{ID: req.ID, Operation: req.Operation}
	}
	for _, tc := range []struct {
		name     string
		answer   func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32)
		protocol bool
	}{
		{"unknown id", func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32) {
			r := ok(req)
			r.ID ^= 0x5555
			return r, 0
		}, true},
		{"replayed id", func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32) {
			r := ok(req)
			if n > 0 {
				r.ID -= 1 << 16 // the slot's previous generation
			}
			return r, 0
		}, true},
		{"wrong operation", func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32) {
			r := ok(req)
			r.Operation = abi.BLKIF_OP_DISCARD
			return r, 0
		}, true},
		{"more responses than requests", func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32) { return ok(req), 3 }, true},
		{"undefined status", func(req abi.BlkifRequest, n int) (abi.BlkifResponse, uint32) {
			r := ok(req)
			if n == 0 {
				r.Status = 99
			}
			return r, 0
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newBlkEnv(t, false)
			e.hostileBack(t, 3, "xvde", tc.answer)
			d, err := blkfront.OpenOptions(e.c.conns[e.fe], e.xsClient(t), "xvde", blkfront.Options{Timeout: 10 * time.Second, CloseTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			errc := make(chan error, 1)
			go func() {
				// The replay needs a slot's second use: read until the
				// ids come round (one page: 32 slots).
				var err error
				for i := 0; i < 100 && err == nil; i++ {
					_, err = d.ReadAt(make([]byte, 4096), 0)
					if !tc.protocol && i == 0 {
						if !errors.Is(err, syscall.EIO) || errors.Is(err, blkfront.ErrProtocol) {
							err = fmt.Errorf("first read: %v, want EIO for its status alone", err)
						} else {
							err = nil
						}
					}
				}
				errc <- err
			}()
			select {
			case err := <-errc:
				if tc.protocol && (!errors.Is(err, blkfront.ErrProtocol) || !errors.Is(err, syscall.EIO)) {
					t.Fatalf("got %v, want ErrProtocol", err)
				}
				if !tc.protocol && err != nil {
					t.Fatal(err)
				}
				t.Logf("%v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the front end hangs")
			}
		})
	}
}

// TestBlkifRandRead: 4 KiB random reads at queue depth 32 (32
// goroutines), each block holding its own number, the back end on this
// host or the other; it logs the rate (SHI_LONG=1: more reads).
func TestBlkifRandRead(t *testing.T) {
	reads := 3000
	if os.Getenv("SHI_LONG") != "" {
		reads = 100000
	}
	for _, where := range []string{"local", "remote"} {
		t.Run(where, func(t *testing.T) {
			e := newBlkEnv(t, where == "remote")
			const size, bs, qd = 64 << 20, 4096, 32
			store := nbd.NewMem(size, false)
			blk := make([]byte, bs)
			for i := range size / bs {
				binary.LittleEndian.PutUint64(blk, uint64(i))
				store.WriteAt(blk, int64(i*bs))
			}
			d := e.openDisk(t, "xvda", store, true)
			var left atomic.Int64
			left.Store(int64(reads))
			start := time.Now()
			var wg sync.WaitGroup
			errc := make(chan error, qd)
			for w := range qd {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 3))
					p := make([]byte, bs)
					for left.Add(-1) >= 0 {
						i := rng.IntN(size / bs)
						if _, err := d.ReadAt(p, int64(i*bs)); err != nil {
							errc <- err
							return
						}
						if got := binary.LittleEndian.Uint64(p); got != uint64(i) {
							errc <- fmt.Errorf("block %d reads as block %d", i, got)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			el := time.Since(start)
			t.Logf("%d reads of 4 KiB at QD%d in %v: %.0f iops", reads, qd, el.Round(time.Millisecond), float64(reads)/el.Seconds())
		})
	}
}
