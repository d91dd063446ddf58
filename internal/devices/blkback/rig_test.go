package blkback

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	ghv "shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/devices/blkif/toolstack"
	"shi/internal/hypervisor"
	"shi/internal/nbd"
	"shi/internal/shm"
	"shi/internal/xenstore"
)

// rig is one host in a process: a hypervisor, a XenStore, a driver
// domain (1) running a Service, and front-end domains added by tests.
type rig struct {
	h    *hypervisor.Hypervisor
	st   *store
	ctx  context.Context // the XenStore's connections' lifetime
	xs   *xs.Client      // the toolstack's (domain 0)
	dir  string
	logs *syncBuf

	// mu guards stores: every store the Service opened, by path.
	mu     sync.Mutex
	stores map[string][]nbd.Backend

	stop func() // stops the Service and waits for it
}

const driver = 1

type syncBuf struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// newRig starts the Service; open wraps each store it opens (nil: the
// file as OpenFile opens it).
func newRig(t testing.TB, wrap func(nbd.Backend) nbd.Backend) *rig {
	t.Helper()
	ctx, stopStore := context.WithCancel(context.Background())
	r := &rig{h: hypervisor.New(hypervisor.Config{}), st: newStore(), ctx: ctx, dir: t.TempDir(),
		logs: &syncBuf{}, stores: map[string][]nbd.Backend{}}
	t.Cleanup(r.h.Close)
	t.Cleanup(stopStore)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("back end log:\n%s", r.logs)
		}
	})
	r.xs = r.client(t, 0)
	hvc := r.dom(t, driver, true)
	svc := NewService(ServiceConfig{Hypervisor: hvc, XenStore: r.client(t, driver),
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Open: func(path string, writable bool) (nbd.Backend, error) {
			b, err := OpenFile(path, writable)
			if err != nil {
				return nil, err
			}
			if wrap != nil {
				b = wrap(b)
			}
			r.mu.Lock()
			r.stores[path] = append(r.stores[path], b)
			r.mu.Unlock()
			return b, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// client connects to the XenStore as domain dom.
func (r *rig) client(t testing.TB, dom uint32) *xs.Client {
	t.Helper()
	nc, err := r.st.conn(r.ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	c := xs.New(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

// dom adds domain id and connects an in-process guest to it; its
// XenStore home is made as the toolstack makes it (owned by the domain).
func (r *rig) dom(t testing.TB, id abi.DomID, privileged bool) *ghv.Conn {
	t.Helper()
	home := "/local/domain/" + strconv.Itoa(int(id))
	mine := xenstore.Perms{{Dom: uint32(id)}}
	var ops []xenstore.Command
	for _, p := range []string{home, home + "/device", home + "/backend"} {
		ops = append(ops, xenstore.Command{Op: xenstore.OpMkdir, Path: p},
			xenstore.Command{Op: xenstore.OpSetPerms, Path: p, Perms: mine})
	}
	ops = append(ops, xenstore.Command{Op: xenstore.OpWrite, Path: home + "/domid", Value: []byte(strconv.Itoa(int(id)))})
	if res := r.st.apply(&xenstore.Command{Op: xenstore.OpTx, Ops: ops}); res.Err != 0 {
		t.Fatalf("dom%d's home: %v", id, res.Err)
	}
	f, err := r.h.AddDomain(id, hypervisor.DomainConfig{Name: fmt.Sprintf("d%d", id), Privileged: privileged, MaxMaps: 8192})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err := shm.FileConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ghv.New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// image makes a sparse image file of size bytes.
func (r *rig) image(t testing.TB, name string, size int64) string {
	t.Helper()
	p := filepath.Join(r.dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// addDisk writes the toolstack's keys for fe's disk, as the agent does
// (toolstack.Keys, applied through the toolstack's client).
func (r *rig) addDisk(t testing.TB, fe uint32, s toolstack.Spec) {
	t.Helper()
	ops, err := toolstack.Keys(fe, driver, s)
	if err != nil {
		t.Fatal(err)
	}
	// One transaction as domain 0, as the agent commits them.
	if res := r.st.apply(&xenstore.Command{Op: xenstore.OpTx, Ops: ops}); res.Err != 0 {
		t.Fatalf("disk keys: %v", res.Err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// backState reads the back end's state of fe's disk dev ("" if gone).
func (r *rig) backState(fe uint32, dev string) string {
	devid, _ := blkif.DevID(dev)
	v, err := r.xs.Read(blkif.BackendPath(driver, fe, devid) + "/state")
	if err != nil {
		return ""
	}
	return string(v)
}
