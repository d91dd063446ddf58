package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"shi/api"
	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// started runs an agent in this process and returns what it printed and
// a function that stops it and returns Run's error (idempotent).
func started(t *testing.T, cfg Config) (Info, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	infoc := make(chan Info, 1)
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, func(i Info) { infoc <- i }) }()
	select {
	case i := <-infoc:
		var once sync.Once
		var err error
		stop := func() error {
			once.Do(func() {
				cancel()
				select {
				case err = <-errc:
				case <-time.After(30 * time.Second):
					err = fmt.Errorf("agent did not stop in 30s")
				}
			})
			return err
		}
		t.Cleanup(func() { stop() })
		return i, stop
	case err := <-errc:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("agent did not start in 30s")
	}
	return Info{}, nil
}

type xsConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialXS(t *testing.T, path string) *xsConn {
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &xsConn{t: t, c: c, r: bufio.NewReader(c)}
}

// do sends a request and returns its reply, skipping watch events.
func (x *xsConn) do(typ uint32, payload string) wire.Msg {
	x.t.Helper()
	if err := (&wire.Msg{Type: typ, Payload: []byte(payload)}).Write(x.c); err != nil {
		x.t.Fatal(err)
	}
	x.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		m, err := wire.Read(x.r)
		if err != nil {
			x.t.Fatal(err)
		}
		if m.Type != abi.XS_WATCH_EVENT {
			return m
		}
	}
}

func TestDevAgent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dev = true
	cfg.Name = "dev"
	cfg.XenstoreSocket = filepath.Join(t.TempDir(), "xs.sock")
	cfg.APIAddr = "127.0.0.1:0"
	cfg.Quota.MaxNodes = 77
	info, stop := started(t, cfg)

	x := dialXS(t, info.XenstoreSocket)
	if m := x.do(abi.XS_READ, "/local/domain/0/name\x00"); string(m.Payload) != "Domain-0" {
		t.Fatalf("dom0 name: %v", m)
	}
	if m := x.do(abi.XS_CONTROL, "quota\x00"); !containsLine(string(m.Payload), "nodes 77") {
		t.Fatalf("-quota not applied: %q", m.Payload)
	}
	c := api.NewClient(info.APIURL)
	self, err := c.Self(context.Background())
	if err != nil || self.XenstoreSocket != info.XenstoreSocket || !self.Dev {
		t.Fatalf("self: %+v %v", self, err)
	}
	in, err := c.Info(context.Background())
	if err != nil || in.Hosts != 1 || in.CPUs == 0 || in.Leader != "dev" {
		t.Fatalf("info: %+v %v", in, err)
	}

	if err := stop(); err != nil {
		t.Fatalf("agent exited with %v", err)
	}
	if _, err := os.Stat(info.XenstoreSocket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func containsLine(s, line string) bool {
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		if s[:i] == line {
			return true
		}
		if i == len(s) {
			break
		}
		s = s[i+1:]
	}
	return false
}

func TestRefusesLiveSocket(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dev, cfg.Name, cfg.APIAddr = true, "a", "127.0.0.1:0"
	cfg.XenstoreSocket = filepath.Join(t.TempDir(), "xs.sock")
	started(t, cfg)
	err := Run(context.Background(), cfg, nil)
	if err == nil {
		t.Fatal("a second agent took over a live socket")
	}
	t.Log(err)
}

// TestCluster runs three agents in this process on loopback addresses
// (127.0.0.x): a write anywhere reads back everywhere, and watches fire on
// every host. Network-namespace tests of faults are in internal/clustertest.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test (-short)")
	}
	base := 20 + os.Getpid()%200
	var infos []Info
	for i := 0; i < 3; i++ {
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("h%d", i)
		cfg.DataDir = t.TempDir()
		cfg.BindIP = fmt.Sprintf("127.0.%d.%d", base, i+1)
		cfg.APIAddr = cfg.BindIP + ":0"
		cfg.XenstoreSocket = filepath.Join(t.TempDir(), "xs.sock")
		cfg.BootstrapExpect = 3
		cfg.TestTiming = true
		// Gossip encryption, and the key authenticates forwarded changes.
		cfg.EncryptKey = []byte("shi-test-key-16b")
		cfg.APIToken = testToken
		for j := 0; j < 3; j++ {
			cfg.Join = append(cfg.Join, fmt.Sprintf("127.0.%d.%d", base, j+1))
		}
		info, _ := started(t, cfg)
		infos = append(infos, info)
	}
	waitLeader(t, infos[0].APIURL)
	w := dialXS(t, infos[2].XenstoreSocket)
	if m := w.do(abi.XS_WATCH, "/shared\x00tok\x00"); m.Type != abi.XS_WATCH {
		t.Fatalf("watch: %v", m)
	}
	wire.Read(w.r) // the initial event
	for i, in := range infos {
		x := dialXS(t, in.XenstoreSocket)
		if m := x.do(abi.XS_WRITE, fmt.Sprintf("/shared/k%d\x00v%d", i, i)); m.Type != abi.XS_WRITE {
			t.Fatalf("write on h%d: %v", i, m)
		}
		// Read your writes on the same connection, from any host.
		if m := x.do(abi.XS_READ, fmt.Sprintf("/shared/k%d\x00", i)); string(m.Payload) != fmt.Sprintf("v%d", i) {
			t.Fatalf("read back on h%d: %v", i, m)
		}
		w.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		ev, err := wire.Read(w.r)
		if err != nil || ev.Type != abi.XS_WATCH_EVENT || string(ev.Payload) != fmt.Sprintf("/shared/k%d\x00tok\x00", i) {
			t.Fatalf("watch event on h2 for h%d's write: %v %v", i, ev, err)
		}
	}
	for _, in := range infos {
		x := dialXS(t, in.XenstoreSocket)
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := x.do(abi.XS_DIRECTORY, "/shared\x00")
			if string(m.Payload) == "k0\x00k1\x00k2\x00" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s sees /shared = %q", in.APIURL, m.Payload)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// What a host acknowledged, every client of that host reads at once:
	// a script's xenstore-write then xenstore-read are two connections.
	for _, in := range infos {
		for k := range 20 {
			a := dialXS(t, in.XenstoreSocket)
			if m := a.do(abi.XS_WRITE, fmt.Sprintf("/seq/k\x00%d", k)); m.Type != abi.XS_WRITE {
				t.Fatalf("write: %v", m)
			}
			a.c.Close()
			b := dialXS(t, in.XenstoreSocket)
			if m := b.do(abi.XS_READ, "/seq/k\x00"); string(m.Payload) != fmt.Sprint(k) {
				t.Fatalf("%s: a new connection read %q after %d was acknowledged", in.APIURL, m.Payload, k)
			}
			b.c.Close()
		}
	}
	c1 := api.NewClient(infos[1].APIURL)
	c1.Token = testToken
	ns, err := c1.Nodes(context.Background())
	if err != nil || len(ns) != 3 {
		t.Fatalf("nodes: %+v %v", ns, err)
	}
	roles := map[string]int{}
	for _, n := range ns {
		roles[n.Role]++
	}
	if roles["leader"] != 1 || roles["voter"] != 2 {
		t.Fatalf("roles: %v", roles)
	}
}

func waitLeader(t *testing.T, url string) {
	t.Helper()
	c := api.NewClient(url)
	c.Token = testToken
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if in, err := c.Info(context.Background()); err == nil && in.Leader != "" && in.HostsAlive == 3 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader within 30s")
}

// openDir returns a new directory that every user may pass through, as
// the XenStore socket's must be for domains under uids of their own
// (t.TempDir's are private).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shi-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDevAgentDomains creates, lists and destroys a domain through the
// agent's API, and a watcher on its XenStore socket sees @releaseDomain.
func TestDevAgentDomains(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dev, cfg.Name, cfg.APIAddr = true, "dev", "127.0.0.1:0"
	cfg.XenstoreSocket = filepath.Join(openDir(t), "xs.sock")
	info, _ := started(t, cfg)
	ctx := context.Background()
	c := api.NewClient(info.APIURL)

	w := dialXS(t, info.XenstoreSocket)
	w.do(abi.XS_WATCH, "@releaseDomain\x00rel\x00")
	wire.Read(w.r) // the initial event

	d, err := c.CreateDomain(ctx, api.DomainSpec{Config: "name = \"sleeper\"\nmemory = 8\ncmd = \"/bin/sleep\"\nargs = [\"60\"]\n"})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID == 0 || d.Host != "dev" {
		t.Fatalf("created %+v", d)
	}
	x := dialXS(t, info.XenstoreSocket)
	if m := x.do(abi.XS_READ, fmt.Sprintf("/local/domain/%d/name\x00", d.ID)); string(m.Payload) != "sleeper" {
		t.Fatalf("toolstack key name: %v", m)
	}
	ds, err := c.ListDomains(ctx)
	if err != nil || len(ds) != 1 || ds[0].Name != "sleeper" {
		t.Fatalf("list: %+v %v", ds, err)
	}
	if _, err := c.CreateDomain(ctx, api.DomainSpec{Config: "name = \"sleeper\"\nmemory = 8\ncmd = \"/bin/sleep\"\n"}); err == nil {
		t.Fatal("a second domain with the same name was created")
	}
	if err := c.DestroyDomain(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if ev, err := wire.Read(w.r); err != nil || string(ev.Payload) != "@releaseDomain\x00rel\x00" {
		t.Fatalf("no @releaseDomain: %v %v", ev, err)
	}
	if m := x.do(abi.XS_READ, fmt.Sprintf("/local/domain/%d/name\x00", d.ID)); m.Type != abi.XS_ERROR {
		t.Fatalf("home left behind: %v", m)
	}
	if err := c.DestroyDomain(ctx, "sleeper"); err == nil {
		t.Fatal("destroying a gone domain succeeded")
	}
}

// TestUnreachableSocket: when the agent is root, domains run under uids
// of their own; with its XenStore socket in a private directory (mktemp
// -d) they could not connect, so the agent serves XenStore but refuses
// to create domains, naming the directory.
func TestUnreachableSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("domains run as the agent's own user unless it is root")
	}
	dir := filepath.Join(openDir(t), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Dev, cfg.Name, cfg.APIAddr = true, "dev", "127.0.0.1:0"
	cfg.XenstoreSocket = filepath.Join(dir, "xs.sock")
	info, _ := started(t, cfg)
	x := dialXS(t, info.XenstoreSocket)
	if m := x.do(abi.XS_READ, "/local/domain/0/name\x00"); string(m.Payload) != "Domain-0" {
		t.Fatalf("XenStore for domain 0: %v", m)
	}
	_, err := api.NewClient(info.APIURL).CreateDomain(context.Background(), api.DomainSpec{Config: "name = \"lost\"\nmemory = 4\ncmd = \"/bin/sleep\"\nargs = [\"60\"]\n"})
	if err == nil {
		t.Fatal("created a domain that cannot reach the XenStore socket")
	}
	t.Log(err)
	for _, want := range []string{"cannot reach the XenStore socket", "directory " + dir + " has mode 0700", "-xenstore-socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
}
