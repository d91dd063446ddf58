package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shi/api"
	"shi/guest/xs"
	"shi/guest/xs/xstest"
	"shi/internal/abi"
)

func TestDefaultSocketAgrees(t *testing.T) {
	if xs.DefaultSocket != api.DefaultXenstoreSocket {
		t.Fatalf("xs.DefaultSocket %q != api.DefaultXenstoreSocket %q", xs.DefaultSocket, api.DefaultXenstoreSocket)
	}
}

// lockedBuffer lets a test read a command's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type xsFixture struct {
	t   *testing.T
	srv *xstest.Server
	env map[string]string
}

func newXSFixture(t *testing.T) *xsFixture {
	t.Helper()
	s := xstest.NewServer()
	sock := filepath.Join(t.TempDir(), "xs.sock")
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &xsFixture{t: t, srv: s, env: map[string]string{"XENSTORED_PATH": sock}}
}

// run runs "shi xenstore args..." in-process.
func (f *xsFixture) run(args ...string) (stdout, stderr string, code int) {
	var out, errb lockedBuffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return f.env[k] }}
	code = Run(context.Background(), env, append([]string{"xenstore"}, args...))
	return out.String(), errb.String(), code
}

// must runs a command that has to succeed silently on stderr.
func (f *xsFixture) must(args ...string) string {
	f.t.Helper()
	out, errs, code := f.run(args...)
	if code != 0 || errs != "" {
		f.t.Fatalf("shi xenstore %q: exit %d, stderr %q", args, code, errs)
	}
	return out
}

func TestXenstoreCommands(t *testing.T) {
	f := newXSFixture(t)
	f.must("write", "/vm/a", "one", "/vm/b/c", `tab\there`)
	f.must("mkdir", "/vm/d", "rel")
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
		code           int
	}{
		{[]string{"read", "/vm/a"}, "one\n", "", 0},
		{[]string{"read", "-p", "/vm/a", "/vm/b/c"}, "/vm/a: one\n/vm/b/c: tab\\there\n", "", 0},
		{[]string{"read", "-R", "/vm/b/c"}, "tab\there", "", 0},
		{[]string{"read", "/vm/a", "/x"}, "one\n", "xenstore-read: couldn't read path /x\n", 1},
		{[]string{"read", "/x"}, "", "xenstore-read: couldn't read path /x\n", 1},
		{[]string{"read"}, "", "xenstore-read: Usage: shi xenstore read [-h] [-p] [-s] [-R] key [...]\n", 1},
		{[]string{"read", "-t", "/vm/a"}, "", "xenstore-read: Usage: shi xenstore read [-h] [-p] [-s] [-R] key [...]\n", 1},
		{[]string{"read", "-z", "/vm/a"}, "one\n", "xenstore-read: invalid option -- 'z'\n", 0},
		{[]string{"read", "/vm/a", "-p"}, "/vm/a: one\n", "", 0},
		{[]string{"read", "rel"}, "\n", "", 0},
		{[]string{"write", "/vm/a"}, "", "xenstore-write: Usage: shi xenstore write [-h] [-s] [-R] key value [...]\n", 1},
		{[]string{"write", "a//b", "v"}, "", "xenstore-write: could not write path a//b\n", 1},
		{[]string{"exists", "/vm/a"}, "", "", 0},
		{[]string{"exists", "/vm/nope"}, "", "", 1},
		{[]string{"list", "/vm"}, "a\nb\nd\n", "", 0},
		{[]string{"list", "-p", "/vm"}, "/vm/a\n/vm/b\n/vm/d\n", "", 0},
		{[]string{"list", "/nope"}, "", "xenstore-list: could not list path /nope\n", 1},
		{[]string{"ls", "/vm"}, "a = \"one\"\nb = \"\"\n c = \"tab\\there\"\nd = \"\"\n", "", 0},
		{[]string{"ls", "-f", "/vm/b"}, "/vm/b/c = \"tab\\there\"\n", "", 0},
		{[]string{"ls", "/nope"}, "", "xenstore-ls: xs_directory (/nope): No such file or directory\n", 1},
		{[]string{"rm", "/x/y"}, "", "xenstore-rm: could not remove path /x/y\n", 1},
		{[]string{"chmod", "/vm/a", "q1"}, "", "xenstore-chmod: Invalid permission specification: 'q'\n", 1},
		{[]string{"chmod", "/vm/nope", "b0"}, "", "xenstore-chmod: Error occurred setting permissions on '/vm/nope': No such file or directory\n", 1},
		{[]string{"watch"}, "", "xenstore-watch: Usage: shi xenstore watch [-h] [-n NR] key\n", 1},
		{[]string{"frob"}, "", "xenstore: unknown mode frob\n", 1},
		{[]string{"-h"}, "", "xenstore: Usage: shi xenstore <mode> [-h] [...]\nmodes: read write rm exists list ls chmod watch mkdir (as Xen's xenstore-<mode>)\n", 0},
	} {
		stdout, stderr, code := f.run(tc.args...)
		if stdout != tc.stdout || stderr != tc.stderr || code != tc.code {
			t.Errorf("shi xenstore %q:\n got %q, %q, exit %d\nwant %q, %q, exit %d", tc.args, stdout, stderr, code, tc.stdout, tc.stderr, tc.code)
		}
	}
}

// The expected text is what Debian's xenstore-ls -p printed for the same
// tree (80 columns: stdout is not a terminal).
func TestXenstoreLsPerms(t *testing.T) {
	f := newXSFixture(t)
	f.must("write", "/t/k", "v", "/t/long", strings.Repeat("x", 100), "/t/bin", "\\001\\xff")
	f.must("chmod", "/t/k", "n1", "r0", "b7")
	want := "" +
		"k = \"v\"  . . . . . . . . . . . . . . . . . . . . . . . . . .  (n1,r0,b7)\n" +
		"long = \"" + strings.Repeat("x", 68) + "\\...\"  (n0)\n" +
		"bin = \"\\001\\xff\" . . . . . . . . . . . . . . . . . . . . . .  (n0)\n"
	if diff := cmp.Diff(want, f.must("ls", "-p", "/t")); diff != "" {
		t.Errorf("ls -p (-want +got):\n%s", diff)
	}
}

func TestXenstoreChmodUptoRecurse(t *testing.T) {
	f := newXSFixture(t)
	f.must("write", "/u/v/w", "1", "/u/v/w/x", "2")
	f.must("chmod", "-u", "/u/v/w", "r3")
	f.must("chmod", "-r", "/u/v/w", "b4")
	for path, want := range map[string]string{"/u": "r3", "/u/v": "r3", "/u/v/w": "b4", "/u/v/w/x": "b4", "/": "n0"} {
		c, err := xs.Open(f.env["XENSTORED_PATH"])
		if err != nil {
			t.Fatal(err)
		}
		perms, err := c.GetPerms(path)
		c.Close()
		if err != nil || len(perms) != 1 || perms[0].String() != want {
			t.Errorf("perms of %s = %v, %v; want %s", path, perms, err, want)
		}
	}
}

func TestXenstoreRmTidy(t *testing.T) {
	f := newXSFixture(t)
	f.must("write", "/a/b/c/d", "1", "/a/keep", "x")
	f.must("rm", "-t", "/a/b/c/d")
	if out := f.must("ls", "/a"); out != "keep = \"x\"\n" {
		t.Errorf("after rm -t: %q", out)
	}
}

func TestXenstoreTransactionRetry(t *testing.T) {
	f := newXSFixture(t)
	f.srv.FailCommits(2)
	f.must("write", "/r/a", "1", "/r/b", "2")
	if out := f.must("read", "/r/a", "/r/b"); out != "1\n2\n" {
		t.Errorf("read = %q", out)
	}
	ends := 0
	for _, m := range f.srv.Requests() {
		if m.Type == abi.XS_TRANSACTION_END {
			ends++
		}
	}
	if ends != 4 { // three for the write (two conflicts), one for the read
		t.Errorf("%d TRANSACTION_END requests, want 4", ends)
	}
}

func TestXenstoreWatch(t *testing.T) {
	f := newXSFixture(t)
	if out := f.must("watch", "-n", "2", "/w", "/v"); out != "/w\n/v\n" {
		t.Fatalf("watch -n 2 = %q", out)
	}
	type result struct {
		out, errs string
		code      int
	}
	done := make(chan result, 1)
	go func() {
		o, e, c := f.run("watch", "-n3", "/w")
		done <- result{o, e, c}
	}()
	// Wait until the watch is registered, then change something below it.
	deadline := time.Now().Add(10 * time.Second)
	for watches := 0; watches < 3; {
		if time.Now().After(deadline) {
			t.Fatal("watch never registered")
		}
		watches = 0
		for _, m := range f.srv.Requests() {
			if m.Type == abi.XS_WATCH {
				watches++
			}
		}
		time.Sleep(time.Millisecond)
	}
	f.must("write", "/w/x", "1", "/w/y", "2")
	r := <-done
	if r.out != "/w\n/w/x\n/w/y\n" || r.code != 0 {
		t.Fatalf("watch = %q, %q, %d", r.out, r.errs, r.code)
	}
}

func TestXenstoreFindsSocketThroughAgent(t *testing.T) {
	f := newXSFixture(t)
	sock := f.env["XENSTORED_PATH"]
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/self" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(api.Self{Name: "fake", XenstoreSocket: sock})
	}))
	defer agent.Close()
	f.env = map[string]string{"SHI_AGENT": agent.URL}
	f.must("write", "/via/agent", "yes")
	f.env = map[string]string{"XENSTORED_PATH": sock}
	if out := f.must("read", "/via/agent"); out != "yes\n" {
		t.Fatalf("read = %q", out)
	}
}

func TestXenstoreNothingAnswers(t *testing.T) {
	dir := t.TempDir()
	f := &xsFixture{t: t, env: map[string]string{
		"SHI_AGENT":        "http://127.0.0.1:1",
		"XENSTORED_RUNDIR": dir,
	}}
	_, errs, code := f.run("read", "/a")
	if code != 1 || !strings.HasPrefix(errs, "xenstore-read: xs_open: ") ||
		!strings.Contains(errs, "no shi agent answers at http://127.0.0.1:1") || !strings.Contains(errs, "shi agent -dev") ||
		!strings.Contains(errs, filepath.Join(dir, "socket")) {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	f.env = map[string]string{"XENSTORED_PATH": filepath.Join(dir, "none.sock")}
	_, errs, code = f.run("read", "/a")
	if code != 1 || !strings.Contains(errs, "none.sock") || !strings.Contains(errs, "no such file or directory") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

func TestSanitise(t *testing.T) {
	for _, tc := range []struct {
		raw   string
		shown string
	}{
		{"plain text", "plain text"},
		{"t\tn\nr\rb\\", `t\tn\nr\rb\\`},
		{"\x00\x07\x08\x1f\x7f\xff", `\000\007\x08\x1f\x7f\xff`},
	} {
		if got := sanitise([]byte(tc.raw)); got != tc.shown {
			t.Errorf("sanitise(%q) = %q, want %q", tc.raw, got, tc.shown)
		}
		if got := unsanitise(tc.shown); string(got) != tc.raw {
			t.Errorf("unsanitise(%q) = %q, want %q", tc.shown, got, tc.raw)
		}
	}
	for in, want := range map[string]string{
		`\x41\x4`:   "A\x04",
		`\xg`:       "xg",
		`\101\1012`: "AA2",
		`\q`:        "q",
		`end\`:      "end\x00",
		`\777`:      "\xff",
	} {
		if got := unsanitise(in); string(got) != want {
			t.Errorf("unsanitise(%q) = %q, want %q", in, got, want)
		}
	}
}
