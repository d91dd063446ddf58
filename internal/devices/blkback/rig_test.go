package blkback

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	ghv "shi/guest/hv"
	"shi/guest/xs"
	"shi/guest/xs/xstest"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/hypervisor"
	"shi/internal/nbd"
	"shi/internal/shm"
	"shi/internal/xenstore"
)

// rig is one host in a process: a hypervisor, a XenStore, a driver
// domain (1) running a Service, and front-end domains added by tests.
type rig struct {
	h    *hypervisor.Hypervisor
	xsrv *xstest.Server
	xs   *xs.Client // the toolstack's
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
func newRig(t *testing.T, wrap func(nbd.Backend) nbd.Backend) *rig {
	t.Helper()
	r := &rig{h: hypervisor.New(hypervisor.Config{}), xsrv: xstest.NewServer(), dir: t.TempDir(),
		logs: &syncBuf{}, stores: map[string][]nbd.Backend{}}
	t.Cleanup(r.h.Close)
	t.Cleanup(func() { r.xsrv.Close() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("back end log:\n%s", r.logs)
		}
	})
	r.xs = r.client(t)
	hvc := r.dom(t, driver, true)
	svc := NewService(ServiceConfig{Hypervisor: hvc, XenStore: r.client(t),
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

func (r *rig) client(t *testing.T) *xs.Client {
	t.Helper()
	nc, err := r.xsrv.Pair()
	if err != nil {
		t.Fatal(err)
	}
	c := xs.New(nc)
	t.Cleanup(func() { c.Close() })
	return c
}

// dom adds domain id and connects an in-process guest to it.
func (r *rig) dom(t *testing.T, id abi.DomID, privileged bool) *ghv.Conn {
	t.Helper()
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
func (r *rig) image(t *testing.T, name string, size int64) string {
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
// (blkif.Keys, applied through the toolstack's client).
func (r *rig) addDisk(t *testing.T, fe uint32, s blkif.Spec) {
	t.Helper()
	ops, err := blkif.Keys(fe, driver, s)
	if err != nil {
		t.Fatal(err)
	}
	// One transaction, as the agent commits them.
	err = r.xs.Transaction(func(tx *xs.Tx) error {
		for _, op := range ops {
			var err error
			switch op.Op {
			case xenstore.OpWrite:
				err = tx.Write(op.Path, op.Value)
			case xenstore.OpSetPerms:
				var ps []xs.Perm
				for _, p := range op.Perms {
					ps = append(ps, xs.Perm{Domid: p.Dom, Access: xs.Access(p.Bits)})
				}
				err = tx.SetPerms(op.Path, ps...)
			default:
				err = fmt.Errorf("unexpected op %v", op.Op)
			}
			if err != nil {
				return fmt.Errorf("%v %s: %w", op.Op, op.Path, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
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
