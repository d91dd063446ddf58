package xs_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shi/guest/xs"
	"shi/guest/xs/xstest"
	"shi/internal/abi"
)

func newClient(t *testing.T) (*xs.Client, *xstest.Server) {
	t.Helper()
	s := xstest.NewServer()
	conn, err := s.Pair()
	if err != nil {
		t.Fatal(err)
	}
	c := xs.New(conn)
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestReadWriteMkdirRm(t *testing.T) {
	c, _ := newClient(t)
	if err := c.Write("/a/b/c", []byte("v\x00w")); err != nil {
		t.Fatal(err)
	}
	v, err := c.Read("/a/b/c")
	if err != nil || string(v) != "v\x00w" {
		t.Fatalf("Read = %q, %v", v, err)
	}
	// Implicitly created parents exist with empty values.
	if v, err := c.Read("/a/b"); err != nil || len(v) != 0 {
		t.Fatalf("Read parent = %q, %v", v, err)
	}
	if err := c.Mkdir("/a/d"); err != nil {
		t.Fatal(err)
	}
	names, err := c.Directory("/a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "d"}, names); diff != "" {
		t.Errorf("Directory (-want +got):\n%s", diff)
	}
	if err := c.Rm("/a/b"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read("/a/b/c")
	if err != syscall.ENOENT || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Read removed = %v, want ENOENT", err)
	}
	if err := c.Rm("/x/y"); err != syscall.ENOENT {
		t.Fatalf("Rm under missing parent = %v, want ENOENT", err)
	}
	if err := c.Write("a//b", nil); err != syscall.EINVAL {
		t.Fatalf("Write bad path = %v, want EINVAL", err)
	}
}

func TestRelativePaths(t *testing.T) {
	c, _ := newClient(t)
	if err := c.Write("data/k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Read("/local/domain/0/data/k"); err != nil || string(v) != "1" {
		t.Fatalf("Read = %q, %v", v, err)
	}
	p, err := c.GetDomainPath(7)
	if err != nil || p != "/local/domain/7" {
		t.Fatalf("GetDomainPath = %q, %v", p, err)
	}
}

func TestEmptyDirectory(t *testing.T) {
	c, _ := newClient(t)
	c.Mkdir("/e")
	names, err := c.Directory("/e")
	if err != nil || len(names) != 0 {
		t.Fatalf("Directory = %q, %v", names, err)
	}
}

func TestDirectoryPart(t *testing.T) {
	c, s := newClient(t)
	var want []string
	for i := range 50 {
		n := fmt.Sprintf("child-%02d", i)
		want = append(want, n)
		if err := c.Mkdir("/big/" + n); err != nil {
			t.Fatal(err)
		}
	}
	s.SetDirectoryLimits(20, 30) // E2BIG for DIRECTORY, ~3 names per part
	got, err := c.Directory("/big")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Directory (-want +got):\n%s", diff)
	}
	parts := 0
	for _, m := range s.Requests() {
		if m.Type == abi.XS_DIRECTORY_PART {
			parts++
		}
	}
	if parts < 10 {
		t.Errorf("%d DIRECTORY_PART requests, want many", parts)
	}
	// An empty directory read in parts.
	c.Mkdir("/big2")
	if got, err := c.Directory("/big2"); err != nil || len(got) != 0 {
		t.Errorf("empty Directory by parts = %q, %v", got, err)
	}
}

func TestPerms(t *testing.T) {
	c, _ := newClient(t)
	c.Mkdir("/p")
	perms := []xs.Perm{{Domid: 5, Access: xs.AccessNone}, {Domid: 7, Access: xs.AccessBoth}, {Domid: 0, Access: xs.AccessRead}}
	if err := c.SetPerms("/p", perms...); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetPerms("/p")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(perms, got); diff != "" {
		t.Errorf("GetPerms (-want +got):\n%s", diff)
	}
	// Children inherit.
	c.Write("/p/q", []byte("x"))
	if got, _ := c.GetPerms("/p/q"); !cmp.Equal(perms, got) {
		t.Errorf("child perms = %v", got)
	}
}

func TestTransactionIsolation(t *testing.T) {
	c, _ := newClient(t)
	tx, err := c.TransactionStart()
	if err != nil {
		t.Fatal(err)
	}
	if tx.ID() == 0 {
		t.Fatal("transaction id 0")
	}
	if err := tx.Write("/t", []byte("in")); err != nil {
		t.Fatal(err)
	}
	if v, err := tx.Read("/t"); err != nil || string(v) != "in" {
		t.Fatalf("read own write = %q, %v", v, err)
	}
	if _, err := c.Read("/t"); err != syscall.ENOENT {
		t.Fatalf("outside read before commit = %v, want ENOENT", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Read("/t"); err != nil || string(v) != "in" {
		t.Fatalf("read after commit = %q, %v", v, err)
	}
	// Abort discards; the id is gone afterwards.
	tx, _ = c.TransactionStart()
	tx.Write("/t", []byte("aborted"))
	if err := tx.Abort(); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Read("/t"); string(v) != "in" {
		t.Fatalf("after abort = %q", v)
	}
	if _, err := tx.Read("/t"); err != syscall.ENOENT {
		t.Fatalf("use after end = %v, want ENOENT", err)
	}
}

func TestTransactionRetries(t *testing.T) {
	c, s := newClient(t)
	s.FailCommits(3)
	runs := 0
	err := c.Transaction(func(tx *xs.Tx) error {
		runs++
		return tx.Write("/r", []byte(fmt.Sprint(runs)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 4 {
		t.Errorf("fn ran %d times, want 4", runs)
	}
	if v, _ := c.Read("/r"); string(v) != "4" {
		t.Errorf("value %q, want 4", v)
	}
	// An error from fn aborts and is returned without retrying.
	runs = 0
	boom := errors.New("boom")
	err = c.Transaction(func(tx *xs.Tx) error {
		runs++
		tx.Write("/r", []byte("no"))
		return boom
	})
	if err != boom || runs != 1 {
		t.Fatalf("Transaction = %v after %d runs", err, runs)
	}
	if v, _ := c.Read("/r"); string(v) != "4" {
		t.Errorf("aborted write visible: %q", v)
	}
}

func TestTransactionConflict(t *testing.T) {
	c, _ := newClient(t)
	tx, _ := c.TransactionStart()
	tx.Read("/local")
	c.Write("/other", []byte("x"))
	tx.Write("/mine", []byte("y"))
	if err := tx.Commit(); err != syscall.EAGAIN {
		t.Fatalf("Commit after a conflicting write = %v, want EAGAIN", err)
	}
}

func recv(t *testing.T, w *xs.Watch) xs.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event")
	}
	return xs.Event{}
}

func TestWatch(t *testing.T) {
	c, _ := newClient(t)
	w, err := c.Watch("/w", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, w); ev != (xs.Event{Path: "/w", Token: "tok"}) {
		t.Fatalf("first event %v", ev)
	}
	rel, err := c.Watch("rel", "r")
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, rel); ev.Path != "rel" {
		t.Fatalf("first relative event %v", ev)
	}
	c.Write("/w/a/b", []byte("1"))
	if ev := recv(t, w); ev.Path != "/w/a/b" {
		t.Fatalf("event %v", ev)
	}
	c.Write("/local/domain/0/rel/x", nil)
	if ev := recv(t, rel); ev != (xs.Event{Path: "rel/x", Token: "r"}) {
		t.Fatalf("relative event %v", ev)
	}
	if _, err := c.Watch("/w", "tok"); err != syscall.EEXIST {
		t.Fatalf("duplicate watch = %v, want EEXIST", err)
	}
	// The failed duplicate must not have taken the first one's events.
	c.Write("/w", []byte("2"))
	if ev := recv(t, w); ev.Path != "/w" {
		t.Fatalf("event %v", ev)
	}
	if err := c.Unwatch(w); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("channel open after Unwatch")
	}
	if err := c.ResetWatches(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-rel.Events(); ok {
		t.Fatal("channel open after ResetWatches")
	}
}

// A watcher that never reads must not stop replies, and its queue is bounded.
func TestWatchSlowReader(t *testing.T) {
	c, _ := newClient(t)
	w, err := c.Watch("/s", "s")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6000 {
		if err := c.Write("/s/k", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Every change is still reported, possibly collapsed into the watch path.
	n := 0
	for {
		ev := recv(t, w)
		n++
		if ev.Path == "/s" && n > 1 {
			break
		}
		if n > 6001 {
			t.Fatal("queue not bounded")
		}
	}
}

func TestDomains(t *testing.T) {
	c, _ := newClient(t)
	w, _ := c.Watch("@introduceDomain", "i")
	recv(t, w)
	if err := c.Introduce(3, 0xfeff, 1); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, w); ev.Path != "@introduceDomain" {
		t.Fatalf("event %v", ev)
	}
	if ok, err := c.IsDomainIntroduced(3); !ok || err != nil {
		t.Fatalf("IsDomainIntroduced = %v, %v", ok, err)
	}
	if err := c.Release(3); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.IsDomainIntroduced(3); ok || err != nil {
		t.Fatalf("IsDomainIntroduced after release = %v, %v", ok, err)
	}
	if err := c.Release(3); err != syscall.ENOENT {
		t.Fatalf("second Release = %v", err)
	}
	if s, err := c.Control("print", "hello"); err != nil || s != "OK" {
		t.Fatalf("Control = %q, %v", s, err)
	}
	if _, err := c.Control("nonsense"); err != syscall.ENOSYS {
		t.Fatalf("Control = %v, want ENOSYS", err)
	}
}

func TestConcurrentCallers(t *testing.T) {
	c, _ := newClient(t)
	w, _ := c.Watch("/", "all")
	go func() {
		for range w.Events() {
		}
	}()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				p := fmt.Sprintf("/c/%d/%d", g, i)
				if err := c.Write(p, []byte(p)); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Read(p); err != nil || string(v) != p {
					t.Errorf("Read %s = %q, %v", p, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestTooLong(t *testing.T) {
	c, s := newClient(t)
	before := len(s.Requests())
	err := c.Write("/big", make([]byte, abi.XENSTORE_PAYLOAD_MAX))
	if err != syscall.E2BIG {
		t.Fatalf("Write = %v, want E2BIG", err)
	}
	if len(s.Requests()) != before {
		t.Fatal("an over-long request was sent")
	}
}

func TestCloseFailsCalls(t *testing.T) {
	c, _ := newClient(t)
	w, _ := c.Watch("/x", "x")
	c.Close()
	if _, err := c.Read("/x"); err != xs.ErrClosed {
		t.Fatalf("Read after Close = %v", err)
	}
	for range w.Events() {
	}
}

func TestSocketPath(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, xs.DefaultSocket},
		{map[string]string{"XENSTORED_RUNDIR": "/r"}, "/r/socket"},
		{map[string]string{"XENSTORED_RUNDIR": "/r", "XENSTORED_PATH": "/p.sock"}, "/p.sock"},
	} {
		if got := xs.SocketPath(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("SocketPath(%v) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "xs.sock")
	if _, err := xs.Open(sock); !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("Open missing = %v", err)
	}
	s := xstest.NewServer()
	defer s.Close()
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XENSTORED_PATH", sock)
	c, err := xs.OpenEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read("/local/domain/0"); err != nil {
		t.Fatal(err)
	}
}
