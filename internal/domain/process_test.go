package domain_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shi/guest/xs"
	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/domain/domaintest"
)

func TestMain(m *testing.M) { domaintest.Main(m) }

const exitWait = 30 * time.Second

func expectOK(t *testing.T, e *domaintest.Env, names ...string) {
	t.Helper()
	for _, n := range names {
		if x := e.WaitExit(t, n, 0, exitWait); x.Status.Crashed() || x.Status.Destroyed {
			t.Errorf("domain %s: %v", n, x.Status)
		}
	}
}

// pair creates domain first running role firstRole, then second running
// secondRole with PEER naming the first, and tells the first who its peer
// is (in ~/data/peer). env goes to both.
func pair(t *testing.T, e *domaintest.Env, first, firstRole, second, secondRole string, env ...string) (directory.Domain, directory.Domain) {
	t.Helper()
	a := e.Create(t, first, firstRole, env...)
	b := e.Create(t, second, secondRole, append([]string{"PEER=" + strconv.Itoa(int(a.ID))}, env...)...)
	e.WriteAsDom0(t, fmt.Sprintf("/local/domain/%d/data/peer", a.ID), strconv.Itoa(int(b.ID)))
	return a, b
}

func TestPingPong(t *testing.T) {
	e := domaintest.Start(t)
	pair(t, e, "pong", "pong", "ping", "ping", "ROUNDS=200")
	expectOK(t, e, "ping", "pong")
}

func TestCoalesceAndMask(t *testing.T) {
	e := domaintest.Start(t)
	pair(t, e, "recv", "evt-recv", "send", "evt-send")
	expectOK(t, e, "recv", "send")
}

func TestGrantedRing(t *testing.T) {
	e := domaintest.Start(t)
	pair(t, e, "back", "ring-back", "front", "ring-front")
	expectOK(t, e, "front", "back")
}

func TestEndAccessWhileMapped(t *testing.T) {
	e := domaintest.Start(t)
	pair(t, e, "mapper", "mapper", "granter", "granter")
	expectOK(t, e, "granter", "mapper")
}

func TestPeerDeathClosesPort(t *testing.T) {
	e := domaintest.Start(t)
	s, _ := pair(t, e, "survivor", "survivor", "binder", "binder")
	c := dom0(t, e)
	if _, err := domaintest.WaitRead(c, fmt.Sprintf("/local/domain/%d/data/waiting", s.ID), exitWait); err != nil {
		t.Fatal(err)
	}
	if err := e.Manager.Destroy(context.Background(), "binder"); err != nil {
		t.Fatal(err)
	}
	if x := e.WaitExit(t, "binder", 0, exitWait); !x.Status.Destroyed {
		t.Errorf("binder: %v", x.Status)
	}
	expectOK(t, e, "survivor")
}

func TestHostileDomain(t *testing.T) {
	e := domaintest.Start(t)
	v := e.Create(t, "victim", "victim")
	e.Create(t, "hostile", "hostile", "VICTIM="+strconv.Itoa(int(v.ID)))
	expectOK(t, e, "hostile")
	// Nobody else was harmed: the victim still runs, and two more
	// domains still talk.
	if d, ok := e.Manager.Lookup("victim"); !ok || d.State != directory.StateRunning {
		t.Fatalf("victim: %+v %v", d, ok)
	}
	pair(t, e, "pong", "pong", "ping", "ping", "ROUNDS=20")
	expectOK(t, e, "ping", "pong")
	log := e.Log.String()
	for _, want := range []string{"name=hostile", "malformed request", "op=gnttab_map", "op=evtchn_bind_interdomain"} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q", want)
		}
	}
}

func TestIdentify(t *testing.T) {
	e := domaintest.Start(t)
	e.Create(t, "who", "whoami")
	expectOK(t, e, "who")
}

func TestRestartOnCrash(t *testing.T) {
	e := domaintest.Start(t)
	// The domain, under a uid of its own when the tests run as root, must
	// be able to leave its marker: else every run crashes, and the exit
	// awaited below may be the second crash rather than the destroy.
	// (t.TempDir's parent is private.)
	dir, err := os.MkdirTemp("", "shi-crash-once-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "crashed")
	cfg := domaintest.Config("phoenix", "crash-once", []string{"MARKER=" + marker}, `on_crash = "restart"`)
	first, err := e.Manager.Create(context.Background(), domain.Spec{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if x := e.WaitExit(t, "phoenix", 0, exitWait); !x.Status.Crashed() || x.Status.Code != 3 {
		t.Fatalf("first run: %v", x.Status)
	}
	deadline := time.Now().Add(exitWait)
	var again directory.Domain
	for {
		if d, ok := e.Manager.Lookup("phoenix"); ok && d.ID != first.ID {
			again = d
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not restarted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if again.State != directory.StateRunning || again.UUID != first.UUID || again.Name != "phoenix" {
		t.Fatalf("restarted as %+v", again)
	}
	if err := e.Manager.Destroy(context.Background(), strconv.Itoa(int(again.ID))); err != nil {
		t.Fatal(err)
	}
	if x := e.WaitExit(t, "phoenix", 1, exitWait); !x.Status.Destroyed {
		t.Fatalf("second run: %v", x.Status)
	}
	if _, ok := e.Manager.Lookup("phoenix"); ok {
		t.Fatal("destroyed domain still listed")
	}
}

// TestCreateDestroyKeys checks the toolstack's keys and their removal,
// with @releaseDomain seen by a watcher.
func TestCreateDestroyKeys(t *testing.T) {
	e := domaintest.Start(t)
	c := dom0(t, e)
	w, err := c.Watch("@releaseDomain", "rel")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events() // fires once when set
	d := e.Create(t, "keys", "sleeper")
	home := fmt.Sprintf("/local/domain/%d", d.ID)
	for path, want := range map[string]string{
		home + "/name": "keys", home + "/domid": strconv.Itoa(int(d.ID)), home + "/vm": "/vm/" + d.UUID,
		home + "/memory/target": "4096", home + "/memory/static-max": "4096",
		"/vm/" + d.UUID + "/name": "keys", "/vm/" + d.UUID + "/uuid": d.UUID,
	} {
		if v, err := c.Read(path); err != nil || string(v) != want {
			t.Errorf("%s = %q, %v; want %q", path, v, err, want)
		}
	}
	if p, err := c.GetPerms(home); err != nil || p[0].Domid != uint32(d.ID) {
		t.Errorf("home perms %v %v: the domain must own its home", p, err)
	}
	if p, err := c.GetPerms(home + "/name"); err != nil || p[0].Domid != 0 {
		t.Errorf("name perms %v %v: the toolstack owns its keys", p, err)
	}
	if err := e.Manager.Destroy(context.Background(), "keys"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Events():
	case <-time.After(exitWait):
		t.Fatal("no @releaseDomain")
	}
	for _, p := range []string{home, "/vm/" + d.UUID} {
		if _, err := c.Read(p); !errors.Is(err, errNoent) {
			t.Errorf("%s after destroy: %v", p, err)
		}
	}
	if len(e.Hypervisor.Domains()) != 0 {
		t.Error("hypervisor still holds the domain")
	}
	if err := e.Manager.Destroy(context.Background(), "keys"); !errors.Is(err, domain.ErrNoSuchDomain) {
		t.Errorf("destroy twice: %v", err)
	}
}

func TestCreateErrors(t *testing.T) {
	e := domaintest.Start(t)
	ctx := context.Background()
	for _, tc := range []struct{ cfg, want string }{
		{"name = 'x'", `"cmd" is required`},
		{"name = 'x'\ncmd = '/nonexistent/prog'", "no such file"},
		{"name = 'x'\ncmd = '/bin/true'\nmemory = 1048576", "no live host has enough free memory"},
	} {
		if _, err := e.Manager.Create(ctx, domain.Spec{Config: tc.cfg}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	e.Create(t, "twin", "sleeper")
	if _, err := e.Manager.Create(ctx, domain.Spec{Config: domaintest.Config("twin", "sleeper", nil)}); !errors.Is(err, domain.ErrNameInUse) {
		t.Errorf("same name twice: %v", err)
	}
	if _, err := e.Manager.Create(ctx, domain.Spec{Config: domaintest.Config("far", "sleeper", nil), Node: "elsewhere"}); err == nil || !strings.Contains(err.Error(), `no host named "elsewhere"`) {
		t.Errorf("unknown node: %v", err)
	}
	if len(e.Manager.List()) != 1 {
		t.Errorf("failed creations left domains behind: %+v", e.Manager.List())
	}
}

func dom0(t *testing.T, e *domaintest.Env) *xs.Client {
	t.Helper()
	c, err := xs.Open(e.XenstoreSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var errNoent = syscall.ENOENT

// TestPipeDuplex streams checksummed bytes both ways at once through two
// pipes in granted pages, in random chunk sizes.
func TestPipeDuplex(t *testing.T) {
	e := domaintest.Start(t)
	pair(t, e, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL=8388608", "PAGES=16")
	expectOK(t, e, "left", "right")
}
