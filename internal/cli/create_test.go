package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/guest/xs"
	"shi/internal/domain/domaintest"
)

// TestMain lets the test binary run as a domain for the create tests.
func TestMain(m *testing.M) {
	domaintest.Register("sleeper", func() error { select {} })
	domaintest.Main(m)
}

func run(t *testing.T, agent string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb lockedBuffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == api.EnvAgent {
			return agent
		}
		return ""
	}}
	code = Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// TestCreateListDestroy runs shi create, list and destroy against an
// in-test agent, with a watcher that sees @releaseDomain.
func TestCreateListDestroy(t *testing.T) {
	e := domaintest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "web.cfg")
	text := strings.Replace(domaintest.Config("web", "sleeper", nil), "memory = 4", "memory = 8", 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := xs.Open(e.XenstoreSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.Watch("@releaseDomain", "rel")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events()

	code, out, errs := run(t, e.APIURL, "create", cfg, "-node", e.Host)
	if code != 0 || !strings.Contains(out, "created domain web (id 1) on "+e.Host) {
		t.Fatalf("create: %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, e.APIURL, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID  NAME") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	f := strings.Fields(lines[1])
	if len(f) < 9 || f[0] != "1" || f[1] != "web" || f[2] != e.Host || f[3] != "running" || f[4]+" "+f[5] != "8.0 MiB" {
		t.Fatalf("list row %q", lines[1])
	}
	// Memory and CPU used, as its cgroup counts them when the agent (root)
	// contains it; "-" when it runs uncontained.
	if os.Geteuid() == 0 {
		if len(f) != 10 || !strings.HasSuffix(f[7], "iB") || !strings.HasSuffix(f[8], "s") {
			t.Fatalf("list row of a contained domain %q", lines[1])
		}
	} else if len(f) != 9 || f[6] != "-" || f[7] != "-" {
		t.Fatalf("list row of an uncontained domain %q", lines[1])
	}
	code, out, _ = run(t, e.APIURL, "list", "-json")
	var ds []api.Domain
	if err := json.Unmarshal([]byte(out), &ds); code != 0 || err != nil || len(ds) != 1 || ds[0].Name != "web" || ds[0].MemoryMiB != 8 ||
		ds[0].Uptime(time.Now()) <= 0 || ds[0].UUID == "" || (os.Geteuid() == 0) != (ds[0].Usage != nil) {
		t.Fatalf("list -json: %d %v %s", code, err, out)
	}
	if code, _, errs := run(t, e.APIURL, "create", cfg); code != 1 || !strings.Contains(errs, "a domain with that name exists") {
		t.Fatalf("second create: %d %q", code, errs)
	}
	if code, _, errs := run(t, e.APIURL, "destroy", "web"); code != 0 {
		t.Fatalf("destroy: %d %q", code, errs)
	}
	select {
	case <-w.Events():
	case <-time.After(10 * time.Second):
		t.Fatal("no @releaseDomain after destroy")
	}
	if _, err := c.Read("/local/domain/1"); err == nil {
		t.Fatal("home left after destroy")
	}
	if code, out, _ := run(t, e.APIURL, "list"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("list after destroy: %q", out)
	}
	if code, _, errs := run(t, e.APIURL, "destroy", "web"); code != 1 || !strings.Contains(errs, "no such domain") {
		t.Fatalf("destroy twice: %d %q", code, errs)
	}
}

func TestCreateUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"create"}, 2, "usage: shi create"},
		{[]string{"create", "/nonexistent.cfg"}, 1, "no such file"},
		{[]string{"destroy"}, 2, "usage: shi destroy"},
		{[]string{"list", "x"}, 2, "unexpected"},
	} {
		code, _, errs := run(t, "http://127.0.0.1:1", tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: %d %q", tc.args, code, errs)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	os.WriteFile(bad, []byte("name = 'x'\nmemroy = 3\n"), 0o600)
	e := domaintest.Start(t)
	code, _, errs := run(t, e.APIURL, "create", bad)
	if code != 1 || !strings.Contains(errs, `config line 2: "memroy": unknown key`) {
		t.Errorf("bad config: %d %q", code, errs)
	}

}
