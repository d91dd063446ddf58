package conformance

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// client is one implementation of the xenstore-* commands: Debian's tools,
// or `shi xenstore`.
type client struct {
	name string
	argv func(mode string) []string
}

func clients(t *testing.T) []client {
	shi := tool(t, mustShi(t))
	xen := func(mode string) []string { return []string{tool(t, "xenstore-"+mode)} }
	return []client{
		{"xen", xen},
		{"shi", func(mode string) []string { return []string{shi, "xenstore", mode} }},
	}
}

func mustShi(t *testing.T) string {
	realProcesses(t)
	a, _ := sharedAgent(t)
	return a.cmd.Path
}

// step is one command and everything it must print. In args and the
// expectations, $R stands for the client's absolute scratch root and $REL
// for its relative one (under /local/domain/0).
type step struct {
	mode           string
	args           []string
	stdout, stderr string
	code           int
}

func a(s ...string) []string { return s }

var long4100 = strings.Repeat("x", 4100)
var long2000 = strings.Repeat("y", 2000)

var steps = []step{
	{"write", a("$R/a", "one", "$R/b/c", "two"), "", "", 0},
	{"read", a("$R/a"), "one\n", "", 0},
	{"read", a("-p", "$R/a", "$R/b/c"), "$R/a: one\n$R/b/c: two\n", "", 0},
	{"read", a("$R/b"), "\n", "", 0},
	{"read", a("$R/missing"), "", "xenstore-read: couldn't read path $R/missing\n", 1},
	{"read", a("$R/a", "$R/missing"), "one\n", "xenstore-read: couldn't read path $R/missing\n", 1},
	{"read", a("@introduceDomain"), "", "xenstore-read: couldn't read path @introduceDomain\n", 1},
	{"exists", a("$R/b/c"), "", "", 0},
	{"exists", a("$R/missing"), "", "", 1},
	{"exists", a("$R/a", "$R/missing"), "", "", 1},
	{"list", a("$R"), "a\nb\n", "", 0},
	{"list", a("-p", "$R/b"), "$R/b/c\n", "", 0},
	{"list", a("$R/b/c"), "", "", 0},
	{"list", a("$R/missing"), "", "xenstore-list: could not list path $R/missing\n", 1},
	{"ls", a("$R"), "a = \"one\"\nb = \"\"\n c = \"two\"\n", "", 0},
	{"ls", a("-f", "$R"), "$R/a = \"one\"\n$R/b = \"\"\n$R/b/c = \"two\"\n", "", 0},
	{"ls", a("$R/missing"), "", "xenstore-ls: xs_directory ($R/missing): No such file or directory\n", 1},

	// Values are quoted on output and unquoted on input, unless -R.
	{"write", a("$R/esc", `tab\there\x41\101\\`), "", "", 0},
	{"read", a("$R/esc"), "tab\\thereAA\\\\\n", "", 0},
	{"read", a("-R", "$R/esc"), "tab\thereAA\\", "", 0},
	{"write", a("-R", "$R/raw", `a\tb`), "", "", 0},
	{"read", a("$R/raw"), "a\\\\tb\n", "", 0},
	{"write", a("$R/bin", `\000\001\x7f\xff`), "", "", 0},
	{"read", a("$R/bin"), "\\000\\001\\x7f\\xff\n", "", 0},
	{"write", a("$R/long", long2000), "", "", 0},
	{"read", a("$R/long"), long2000 + "\n", "", 0},
	{"write", a("$R/empty", ""), "", "", 0},
	{"read", a("$R/empty"), "\n", "", 0},

	// Bad paths and sizes.
	{"write", a("$R//bad", "v"), "", "xenstore-write: could not write path $R//bad\n", 1},
	{"write", a("$R/trailing/", "v"), "", "xenstore-write: could not write path $R/trailing/\n", 1},
	{"write", a("$R/sp ace", "v"), "", "xenstore-write: could not write path $R/sp ace\n", 1},
	{"write", a("$R/too-long", long4100), "", "xenstore-write: could not write path $R/too-long\n", 1},
	{"write", a("@introduceDomain", "v"), "", "xenstore-write: could not write path @introduceDomain\n", 1},
	{"exists", a("$R/bad"), "", "", 1},

	// Permissions (we are dom0, so every access is allowed; what we can
	// observe is the list as stored).
	{"chmod", a("$R/a", "n1", "r2", "b3", "w4"), "", "", 0},
	{"ls", a("-p", "$R/b"), "c = \"two\"  . . . . . . . . . . . . . . . . . . . . . . . . .  (n0)\n", "", 0},
	{"chmod", a("$R/missing", "b0"), "", "xenstore-chmod: Error occurred setting permissions on '$R/missing': No such file or directory\n", 1},
	{"chmod", a("$R/a", "q1"), "", "xenstore-chmod: Invalid permission specification: 'q'\n", 1},
	{"chmod", a("-r", "$R/b", "b5"), "", "", 0},
	{"write", a("$R/b/c/d", "new"), "", "", 0},
	{"ls", a("-f", "-p", "$R/b"), "$R/b/c = \"two\"   (b5)\n$R/b/c/d = \"new\"   (b5)\n", "", 0},
	{"chmod", a("-u", "$R/b/c", "r7"), "", "", 0},
	{"ls", a("-p", "-f", "$R"), "" +
		"$R/a = \"one\"   (n1,r2,b3,w4)\n" +
		"$R/b = \"\"   (r7)\n" +
		"$R/b/c = \"two\"   (r7)\n" +
		"$R/b/c/d = \"new\"   (b5)\n" +
		"$R/esc = \"tab\\thereAA\\\\\"   (n0)\n" +
		"$R/raw = \"a\\\\tb\"   (n0)\n" +
		"$R/bin = \"\\000\\001\\x7f\\xff\"   (n0)\n" +
		"$R/long = \"" + long2000 + "\"   (n0)\n" +
		"$R/empty = \"\"   (n0)\n", "", 0},
	{"chmod", a("-r", "$R", "n0"), "", "", 0},

	// Removal.
	{"rm", a("$R/x/y"), "", "xenstore-rm: could not remove path $R/x/y\n", 1},
	{"rm", a("$R/nothere"), "", "", 0},
	{"rm", a("$R/b"), "", "", 0},
	{"exists", a("$R/b/c/d"), "", "", 1},
	{"exists", a("$R/b"), "", "", 1},
	{"write", a("$R/t/u/v", "1", "$R/t/keep", ""), "", "", 0},
	{"rm", a("-t", "$R/t/u/v"), "", "", 0},
	{"list", a("$R/t"), "keep\n", "", 0},
	{"rm", a("-t", "$R/t/keep"), "", "", 0},
	{"exists", a("$R/t"), "", "", 1},
	{"rm", a("/"), "", "xenstore-rm: could not remove path /\n", 1},

	// Relative paths are under the connection's home, /local/domain/0.
	{"write", a("$REL/x", "5"), "", "", 0},
	{"read", a("/local/domain/0/$REL/x"), "5\n", "", 0},
	{"ls", a("$REL"), "x = \"5\"\n", "", 0},
	{"list", a("-p", "$REL"), "$REL/x\n", "", 0},
	{"rm", a("$REL"), "", "", 0},
	{"exists", a("/local/domain/0/$REL"), "", "", 1},
}

func roots(c client) (abs, rel string) {
	// Separate top-level roots: chmod -u changes every ancestor but "/".
	return "/conformance-" + c.name, "conformance-" + c.name
}

func expand(s, abs, rel string) string {
	return strings.NewReplacer("$REL", rel, "$R", abs).Replace(s)
}

// TestXenstoreUtils runs every step with Debian's tools and with
// `shi xenstore`, each in its own part of the tree, against the agent.
func TestXenstoreUtils(t *testing.T) {
	_, px := sharedAgent(t)
	env := []string{"XENSTORED_PATH=" + px.socket}
	for _, c := range clients(t) {
		t.Run(c.name, func(t *testing.T) {
			abs, rel := roots(c)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for _, root := range []string{abs, "/local/domain/0/" + rel} {
				// Create, then remove: rm fails when the parent is missing.
				run(t, ctx, env, append(c.argv("write"), root, "")...)
				if r := run(t, ctx, env, append(c.argv("rm"), root)...); r.code != 0 {
					t.Fatalf("clearing %s: %+v", root, r)
				}
			}
			for i, s := range steps {
				args := make([]string, len(s.args))
				for j, x := range s.args {
					args[j] = expand(x, abs, rel)
				}
				want := result{expand(s.stdout, abs, rel), expand(s.stderr, abs, rel), s.code}
				mark := px.mark()
				got := run(t, ctx, env, append(c.argv(s.mode), args...)...)
				if got != want {
					t.Errorf("step %d: %s %q\n got stdout %q\n     stderr %q exit %d\nwant stdout %q\n     stderr %q exit %d\nsocket traffic:\n%s",
						i, s.mode, short(args), got.stdout, got.stderr, got.code, want.stdout, want.stderr, want.code, px.since(mark, 40))
				}
			}
		})
	}
}

func short(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 60 {
			a = a[:60] + "..."
		}
		out[i] = a
	}
	return out
}

// TestXenstoreWatch checks that watch prints the watch's own path first,
// then one line per change at or below it, relative for relative watches.
func TestXenstoreWatch(t *testing.T) {
	_, px := sharedAgent(t)
	env := []string{"XENSTORED_PATH=" + px.socket}
	write := tool(t, "xenstore-write")
	rm := tool(t, "xenstore-rm")
	for _, c := range clients(t) {
		t.Run(c.name, func(t *testing.T) {
			abs, rel := roots(c)
			abs += "-watch"
			rel += "-watch"
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			mark := px.mark()
			lines, wait := startWatch(t, ctx, env, append(c.argv("watch"), "-n", "5", abs, rel)...)
			expect := func(want string) {
				t.Helper()
				select {
				case got, ok := <-lines:
					if !ok || got != want {
						t.Fatalf("watch printed %q (open %v), want %q\nsocket traffic:\n%s", got, ok, want, px.since(mark, 40))
					}
				case <-ctx.Done():
					t.Fatalf("watch printed nothing, want %q\nsocket traffic:\n%s", want, px.since(mark, 40))
				}
			}
			expect(abs)
			expect(rel)
			run(t, ctx, env, write, abs+"/x", "1")
			expect(abs + "/x")
			run(t, ctx, env, rm, abs)
			expect(abs)
			run(t, ctx, env, write, "/local/domain/0/"+rel+"/y", "2")
			expect(rel + "/y")
			if r := wait(); r.code != 0 || r.stderr != "" {
				t.Fatalf("watch exited %d, stderr %q", r.code, r.stderr)
			}
			run(t, ctx, env, rm, "/local/domain/0/"+rel)
		})
	}
}

// startWatch starts a watch process and returns its stdout lines and a
// function that waits for it.
func startWatch(t *testing.T, ctx context.Context, env []string, argv ...string) (<-chan string, func() result) {
	t.Helper()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	var errb syncBuffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	return lines, func() result {
		err := cmd.Wait()
		r := result{stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
}

// TestShiXenstoreFindsAgent checks that `shi xenstore` finds the socket
// through SHI_AGENT alone, and says clearly when nothing answers.
func TestShiXenstoreFindsAgent(t *testing.T) {
	ag, _ := sharedAgent(t)
	shi := mustShi(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := []string{"SHI_AGENT=" + ag.url}
	if r := run(t, ctx, env, shi, "xenstore", "write", "/conformance-shi/via-agent", "ok"); r.code != 0 {
		t.Fatalf("write via SHI_AGENT: %+v", r)
	}
	if r := run(t, ctx, env, shi, "xenstore", "read", "/conformance-shi/via-agent"); r.stdout != "ok\n" || r.code != 0 {
		t.Fatalf("read via SHI_AGENT: %+v", r)
	}
	if r := run(t, ctx, env, shi, "xenstore", "mkdir", "/conformance-shi/made"); r.code != 0 {
		t.Fatalf("mkdir: %+v", r)
	}
	if r := run(t, ctx, env, shi, "xenstore", "exists", "/conformance-shi/made"); r.code != 0 {
		t.Fatalf("exists after mkdir: %+v", r)
	}
	r := run(t, ctx, []string{"SHI_AGENT=http://127.0.0.1:1", "XENSTORED_RUNDIR=" + t.TempDir()}, shi, "xenstore", "read", "/a")
	if r.code != 1 || !strings.Contains(r.stderr, "no shi agent answers at http://127.0.0.1:1") {
		t.Fatalf("with nothing to answer: %+v", r)
	}
}
