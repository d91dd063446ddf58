package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/directory"
)

// testToken is the management token of the tests' cluster agents.
const testToken = "test-management-token-0123456789"

func TestAccess(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         level
	}{
		{"GET", "/", levelPublic},
		{"GET", "/console/", levelPublic},
		{"GET", "/console/xterm/xterm.js", levelPublic},
		{"GET", "/v1/agent/self", levelRead},
		{"GET", "/v1/nodes", levelRead},
		{"GET", "/v1/info", levelRead},
		{"GET", "/metrics", levelRead},
		{"GET", "/v1/domains", levelRead},
		{"GET", "/v1/domains/web", levelRead},
		{"GET", "/v1/domains/web/output", levelRead},
		{"GET", "/v1/domains/web/disks", levelRead},
		{"GET", "/v1/domains/web/console", levelWrite},
		{"POST", "/v1/domains", levelWrite},
		{"DELETE", "/v1/domains/web", levelWrite},
		{"POST", "/v1/domains/web/disks/xvda/export", levelWrite},
		{"POST", "/v1/console/tickets", levelWrite},
		{"GET", "/v1/acl/tokens", levelWrite},
		{"POST", "/v1/acl/tokens", levelWrite},
		{"DELETE", "/v1/acl/tokens/x", levelWrite},
		{"POST", "/v1/internal/commit", levelAgent},
		{"POST", "/v1/internal/readindex", levelAgent},
		{"POST", "/v1/internal/faults", levelWrite},
		{"GET", "/v1/internal/keyring", levelAgent},
		{"POST", "/v1/internal/keyring", levelAgent},
		{"GET", "/v1/keyring", levelWrite},
		{"GET", "/debug/goroutines", levelWrite},
		{"GET", "/v1/whatever", levelWrite},
		{"PUT", "/v1/nodes", levelWrite},
		{"GET", "/v1/domains/../acl/tokens", levelWrite},
		{"GET", "/v1/domains/x/../../internal/keyring", levelAgent},
		{"GET", "/v1//domains/web/console", levelWrite},
		{"GET", "/console/../v1/acl/tokens", levelWrite},
	} {
		if got := access(c.method, c.path); got != c.want {
			t.Errorf("access(%s %s) = %d, want %d", c.method, c.path, got, c.want)
		}
	}
}

func TestIsConsolePath(t *testing.T) {
	for p, want := range map[string]bool{
		"/v1/domains/web/console":     true,
		"/v1/domains/a%2Fb/console":   true,
		"/v1/domains/a/b/console":     false,
		"/v1/domains//console":        false,
		"/v1/domains/web/console/":    false,
		"/v1/domains/web/consolex":    false,
		"/v1/internal/commit/console": false,
	} {
		if got := isConsolePath(p); got != want {
			t.Errorf("isConsolePath(%q) = %v", p, got)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	a, err := readTokenFile(p)
	if err != nil || len(a) != 32 {
		t.Fatalf("new file: %q %v", a, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi.Mode(), err)
	}
	if b, err := readTokenFile(p); err != nil || b != a {
		t.Fatalf("read again: %q %v, want %q", b, err, a)
	}
	os.Chmod(p, 0o644)
	if _, err := readTokenFile(p); err == nil || !strings.Contains(err.Error(), "private") {
		t.Fatalf("a token others may read was taken: %v", err)
	}
	os.WriteFile(p, []byte("short\n"), 0o600)
	os.Chmod(p, 0o600)
	if _, err := readTokenFile(p); err == nil {
		t.Fatal("a short token was taken")
	}
}

// authAgent starts a one-host cluster agent with the test token and a
// local socket.
func authAgent(t *testing.T) (Info, Config) {
	t.Helper()
	cfg := authConfig(t)
	info, _ := started(t, cfg)
	return info, cfg
}

func authConfig(t *testing.T) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = "auth"
	cfg.DataDir = t.TempDir()
	cfg.BindIP = fmt.Sprintf("127.0.%d.9", 20+os.Getpid()%200)
	cfg.APIAddr = cfg.BindIP + ":0"
	// Ports of this process's own: other tests' agents use the defaults.
	base := 20000 + os.Getpid()%20000
	cfg.GossipPort, cfg.RaftPort, cfg.DataPort = base, base+1, base+2
	dir := openDir(t)
	cfg.XenstoreSocket = filepath.Join(dir, "xs.sock")
	cfg.APISocket = api.SocketBeside(cfg.XenstoreSocket)
	cfg.BootstrapExpect = 1
	cfg.TestTiming = true
	cfg.APIToken = testToken
	return cfg
}

// TestBootstrapToken: without -api-token-file the first leader makes a
// management token and says it once; restarted on its data, it does not
// make another, and the first still works.
func TestBootstrapToken(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster agent (-short)")
	}
	cfg := authConfig(t)
	cfg.APIToken = ""
	told := make(chan string, 2)
	cfg.OnBootstrapToken = func(s string) { told <- s }
	info, stop := started(t, cfg)
	var secret string
	select {
	case secret = <-told:
	case <-time.After(30 * time.Second):
		t.Fatal("no bootstrap token")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := api.NewClient(info.APIURL)
	c.Token = secret
	ts, err := c.Tokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "bootstrap" || ts[0].ReadOnly {
		t.Fatalf("tokens with the bootstrap token: %+v %v", ts, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	info, _ = started(t, cfg)
	c = api.NewClient(info.APIURL)
	c.Token = secret
	for {
		if _, err := c.Nodes(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the bootstrap token after a restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a second bootstrap would have happened by now
	select {
	case s := <-told:
		t.Fatalf("a restarted agent made another bootstrap token %q", s)
	default:
	}
}

func status(t *testing.T, c *api.Client, method, path, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, c.Base()+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	c.Authorize(req.Header)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAuth: no token and unknown tokens get 401, a read-only token reads
// but changes nothing (403), the management token and root on the socket
// may do anything, and only agents may commit.
func TestAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster agent (-short)")
	}
	info, cfg := authAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mgmt := api.NewClient(info.APIURL)
	mgmt.Token = testToken
	for {
		if in, err := mgmt.Info(ctx); err == nil && in.Leader != "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	anon := api.NewClient(info.APIURL)
	wrong := api.NewClient(info.APIURL)
	wrong.Token = "not-a-token-of-this-cluster"
	for _, c := range []*api.Client{anon, wrong} {
		for _, p := range []string{"/v1/nodes", "/v1/domains", "/metrics", "/v1/acl/tokens"} {
			if code := status(t, c, "GET", p, ""); code != 401 {
				t.Errorf("token %q: GET %s: %d, want 401", c.Token, p, code)
			}
		}
		if code := status(t, c, "POST", "/v1/domains", `{"config":"name='x'\ncmd='/bin/true'"}`); code != 401 {
			t.Errorf("token %q: create: %d, want 401", c.Token, code)
		}
	}
	if _, err := anon.Nodes(ctx); err == nil || !strings.Contains(err.Error(), api.EnvToken) {
		t.Errorf("no token: error %v does not say how to give one", err)
	}
	// The page is public; it asks for the token itself.
	if code := status(t, anon, "GET", "/console/", ""); code != 200 {
		t.Errorf("console page: %d", code)
	}

	ro, err := mgmt.CreateToken(ctx, api.ACLTokenRequest{Name: "watcher", ReadOnly: true})
	if err != nil || ro.Secret == "" || !ro.ReadOnly {
		t.Fatalf("create read-only token: %+v %v", ro, err)
	}
	if _, err := mgmt.CreateToken(ctx, api.ACLTokenRequest{Name: "watcher"}); err == nil {
		t.Error("a second token named watcher was made")
	}
	rc := api.NewClient(info.APIURL)
	rc.Token = ro.Secret
	for _, p := range []string{"/v1/nodes", "/v1/info", "/v1/domains", "/metrics", "/v1/agent/self"} {
		if code := status(t, rc, "GET", p, ""); code != 200 {
			t.Errorf("read-only: GET %s: %d, want 200", p, code)
		}
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/domains", `{"config":"name='x'\ncmd='/bin/true'"}`},
		{"DELETE", "/v1/domains/x", ""},
		{"POST", "/v1/acl/tokens", `{"name":"mine"}`},
		{"GET", "/v1/acl/tokens", ""},
		{"POST", api.ConsoleTicketsPath, `{"domain":"x"}`},
		{"POST", "/v1/internal/commit", ""},
	} {
		if code := status(t, rc, c.method, c.path, c.body); code != 403 {
			t.Errorf("read-only: %s %s: %d, want 403", c.method, c.path, code)
		}
	}
	// Only agents commit: a management token may not write the log directly.
	entry := directory.AuthEntry(directory.AuthCmd{Op: directory.AuthDelete, Token: directory.Token{ID: "watcher"}})
	req, _ := http.NewRequest("POST", info.APIURL+"/v1/internal/commit", bytes.NewReader(entry))
	mgmt.Authorize(req.Header)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("management token committing: %v %v", resp.Status, err)
	}

	// Root on the socket needs no token.
	sock := api.NewClient("unix:" + cfg.APISocket)
	toks, err := sock.Tokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens through the socket: %+v %v", toks, err)
	}
	for _, tk := range toks {
		if tk.Secret != "" {
			t.Errorf("list shows %s's secret", tk.Name)
		}
	}
	if fi, err := os.Stat(cfg.APISocket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	if err := sock.DeleteToken(ctx, "watcher"); err != nil {
		t.Fatal(err)
	}
	if code := status(t, rc, "GET", "/v1/nodes", ""); code != 401 {
		t.Errorf("deleted token: %d, want 401", code)
	}
	if err := mgmt.DeleteToken(ctx, "watcher"); err == nil || !strings.Contains(err.Error(), "no such token") {
		t.Errorf("delete again: %v", err)
	}
}
