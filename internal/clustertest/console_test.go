package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/devices/console"
	"shi/internal/domain/domaintest"
)

func init() { domaintest.Register("console-direct", consoleDirect) }

// consoleDirect is a guest-library program with console = "direct": it
// writes its console ring itself, and answers a line typed into it in
// capitals.
func consoleDirect() error {
	hvc, err := hv.Self()
	if err != nil {
		return err
	}
	xsc, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	f, err := console.OpenFront(hvc, xsc)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte("direct console ready\r\n")); err != nil {
		return err
	}
	var line []byte
	buf := make([]byte, 64)
	for !strings.ContainsAny(string(line), "\r\n") {
		n, err := f.Read(buf)
		if err != nil {
			return err
		}
		line = append(line, buf[:n]...)
	}
	f.Write([]byte(strings.ToUpper(strings.TrimSpace(string(line))) + "\r\n"))
	for !f.Flushed() {
		time.Sleep(time.Millisecond)
	}
	return nil
}

// tmux drives shi console in real terminals: one tmux server per test,
// one session per viewer, each running the CLI inside a test host.
type tmux struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is missing (scripts/deps.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "shitmux-") // socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	x := &tmux{t: t, sock: filepath.Join(dir, "s")}
	t.Cleanup(func() {
		exec.Command("tmux", "-S", x.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	return x
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", x.sock}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// viewer starts `shi console ARGS` from host h in a new session named
// name; once the CLI exits the pane says how and stays.
func (x *tmux) viewer(c *Cluster, h *Host, name string, args ...string) {
	x.t.Helper()
	// A domain created through another host reaches this one's replica
	// a moment later.
	dom := args[len(args)-1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Poll(ctx, 20*time.Millisecond, func() bool {
		ds, _ := h.API.ListDomains(ctx)
		for _, d := range ds {
			if d.Name == dom {
				return true
			}
		}
		return false
	}); err != nil {
		x.t.Fatalf("%s never knew domain %s", h.Name, dom)
	}
	cmd := fmt.Sprintf("ip netns exec %s env %s=%s %s=%s %s console %s; echo \"\n%s-rc=$?\"; sleep 600",
		c.NS.Host(h.Index).NS, api.EnvAgent, h.URL, api.EnvToken, c.Token, c.Bin, strings.Join(args, " "), name)
	x.run("new-session", "-d", "-s", name, "-x", "100", "-y", "30", cmd)
}

func (x *tmux) keys(name string, keys ...string) {
	x.t.Helper()
	x.run(append([]string{"send-keys", "-t", name}, keys...)...)
}

func (x *tmux) screen(name string) string {
	x.t.Helper()
	return x.run("capture-pane", "-p", "-J", "-S", "-200", "-t", name)
}

// wait waits until session name's screen contains want (with -count
// occurrences at least).
func (x *tmux) wait(name, want string, count int) string {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var s string
	if Poll(ctx, 50*time.Millisecond, func() bool {
		s = x.screen(name)
		return strings.Count(s, want) >= count
	}) != nil {
		x.t.Fatalf("%s: %q (x%d) never showed; screen:\n%s", name, want, count, s)
	}
	return s
}

// TestConsole: shi console into a shell domain on another host, as a
// person would use it in tmux: type, read, resize, detach and attach
// again, two viewers, a forced take-over, a console whose back end is
// on a third host (with its transcript), that host killed, and the
// domain's exit.
func TestConsole(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 3})
	h0, h1, h2 := c.Host(0), c.Host(1), c.Host(2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x := newTmux(t)
	waitDrivers(t, ctx, c)

	sh := createOn(t, ctx, h1, "name = \"sh\"\ncmd = \"/bin/sh\"\nargs = [\"-i\"]\n")
	x.viewer(c, h0, "a", "sh")
	x.wait("a", "$ ", 1)
	x.keys("a", "echo con$((6*7))sole", "Enter")
	x.wait("a", "con42sole", 1)

	// The window size follows tmux's.
	x.run("resize-window", "-t", "a", "-x", "120", "-y", "40")
	time.Sleep(200 * time.Millisecond)
	x.keys("a", "stty size", "Enter")
	x.wait("a", "40 120", 1)

	// A second viewer is read-only, is told so, sees the scrollback
	// and then the same bytes.
	x.viewer(c, h2, "b", "sh")
	x.wait("b", "read-only", 1)
	x.wait("b", "con42sole", 1)
	x.keys("b", "echo ignored", "Enter")
	x.keys("a", "echo two-viewers", "Enter")
	x.wait("b", "two-viewers", 2)
	if s := x.screen("a"); strings.Contains(s, "ignored") {
		t.Fatalf("a read-only viewer's keys reached the domain:\n%s", s)
	}

	// Ctrl-] detaches; attaching again shows the scrollback.
	x.keys("a", "C-]")
	x.wait("a", "a-rc=0", 1)
	x.viewer(c, h0, "c", "sh")
	x.wait("c", "two-viewers", 2)

	// -force takes the writer's place.
	x.viewer(c, h2, "d", "-force", "sh")
	x.wait("c", "another viewer took the console", 1)
	x.keys("d", "echo forced", "Enter")
	x.wait("c", "forced", 2)

	// A console served by a third host's driver domain, with a
	// transcript there.
	logPath := filepath.Join(t.TempDir(), "sh3.log")
	sh3 := createOn(t, ctx, h1, fmt.Sprintf("name = \"sh3\"\ncmd = \"/bin/sh\"\nargs = [\"-i\"]\nconsole_backend = %q\nconsole_log = %q\n", h2.Name, logPath))
	var be []byte // h0's replica may not have applied the creation yet
	if err := Poll(ctx, 20*time.Millisecond, func() bool {
		be, _ = h0.XS().Read(fmt.Sprintf("/local/domain/%d/console/backend", sh3.ID))
		return len(be) > 0
	}); err != nil || !strings.Contains(string(be), "/backend/console/") {
		t.Fatalf("sh3's console/backend: %q %v", be, err)
	}
	x.viewer(c, h0, "e", "sh3")
	x.wait("e", "$ ", 1)
	x.keys("e", "echo remote$((40+2))back", "Enter")
	x.wait("e", "remote42back", 1)
	if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "remote42back") {
		t.Fatalf("transcript on h2: %q %v", b, err)
	}

	// console = "direct": a guest-library program drives its ring.
	dd := createOn(t, ctx, h2, domaintest.Config("direct", "console-direct", nil))
	x.viewer(c, h0, "f", dd.Name)
	x.wait("f", "direct console ready", 1)
	x.keys("f", "shout", "Enter")
	x.wait("f", "SHOUT", 1)
	x.wait("f", "exit code 0", 1)

	// A domain that floods its console is throttled by its ring: the
	// back end (on the same host as sh's) keeps no more than its
	// scrollback, the agent's log gets a bounded share, and sh answers
	// meanwhile.
	rss := func() int {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", h1.Proc().Pid()))
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				var kb int
				fmt.Sscan(v, &kb)
				return kb
			}
		}
		return 0
	}
	before := rss()
	flood := createOn(t, ctx, h1, "name = \"flood\"\ncmd = \"/bin/sh\"\nargs = [\"-c\", \"head -c 40000000 /dev/zero; echo; echo flood-done\"]\n")
	x.keys("d", "echo still$((1+1))alive", "Enter")
	x.wait("d", "still2alive", 1)
	fo := waitEnd(t, h1, flood, 60*time.Second)
	after := rss()
	t.Logf("flood: h1's agent RSS %d KiB before, %d KiB after; its last lines: %q", before, after, fo.Lines[max(0, len(fo.Lines)-3):])
	if after-before > 100<<10 {
		t.Errorf("h1's agent grew from %d to %d KiB during a 40 MB flood", before, after)
	}
	if fo.Exit != "exit code 0" || !strings.Contains(strings.Join(fo.Lines, "\n"), "flood-done") ||
		!strings.Contains(strings.Join(fo.Lines, "\n"), "bytes not logged") {
		t.Errorf("flood's end and last lines: %s %q", fo.Exit, fo.Lines)
	}

	// The domain exits: its viewers are told how.
	x.keys("d", "exit 3", "Enter")
	x.wait("d", "exit code 3", 1)
	x.wait("d", "d-rc=0", 1)
	x.wait("c", "exit code 3", 1)
	out, err := exec.Command("ip", "netns", "exec", c.NS.Host(0).NS, "env", api.EnvAgent+"="+h0.URL, api.EnvToken+"="+c.Token, c.Bin, "console", "sh").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "sh") {
		t.Fatalf("console of an ended domain: %v\n%s", err, out)
	}
	t.Logf("console of an ended domain: %s", strings.TrimSpace(string(out)))
	_ = sh

	// The back end's host dies: the viewer is told.
	h2.Kill()
	s := x.wait("e", "e-rc=", 1)
	if !strings.Contains(s, "h2") {
		t.Fatalf("viewer of a console whose back end host died:\n%s", s)
	}
	t.Logf("viewer after the back end's host died:\n%s", lastLines(s, 4))

	// The transcript outlives h2's agent: a console served by the
	// restarted agent appends to it.
	h2.Start()
	waitDrivers(t, ctx, c)
	createOn(t, ctx, h1, fmt.Sprintf("name = \"sh4\"\ncmd = \"/bin/sh\"\nargs = [\"-i\"]\nconsole_backend = %q\nconsole_log = %q\n", h2.Name, logPath))
	x.viewer(c, h0, "g", "sh4")
	x.wait("g", "$ ", 1)
	x.keys("g", "echo after$((1+1))restart", "Enter")
	x.wait("g", "after2restart", 1)
	if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "remote42back") || !strings.Contains(string(b), "after2restart") {
		t.Fatalf("transcript after h2's agent restarted: %q %v", b, err)
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// waitDrivers waits until every host's driver domain is in XenStore: they
// come up after the cluster, and a domain created before its console's
// driver has no console.
func waitDrivers(t *testing.T, ctx context.Context, c *Cluster) {
	t.Helper()
	x := c.Host(0).XS()
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		n := 0
		ks, _ := x.Directory("/local/domain")
		for _, k := range ks {
			if v, err := x.Read("/local/domain/" + k + "/name"); err == nil && strings.HasPrefix(string(v), "driver-") {
				n++
			}
		}
		return n == len(c.Hosts())
	}); err != nil {
		t.Fatal("driver domains never appeared")
	}
}

// TestBenchConsole runs shi bench console between two test hosts: a
// domain on h0, the viewer on h1 (through h1's agent), against a pty on
// h0 bridged over TCP to h1; then with the console's back end on h1, so
// that the ring crosses hosts. It prints figures (the last line of each
// run is the headline); scripts/bench-console.sh runs it.
func TestBenchConsole(t *testing.T) {
	if os.Getenv("SHI_BENCH_CONSOLE") == "" {
		t.Skip("console benchmark: SHI_BENCH_CONSOLE=1 (scripts/bench-console.sh)")
	}
	c := Start(t, Options{Hosts: 3}) // two would not elect a leader; h2 only votes
	h0, h1 := c.Host(0), c.Host(1)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	waitDrivers(t, ctx, c)
	addr := h0.IP + ":7171"
	srv := c.NS.Host(0).Command(ctx, c.Bin, "benchtcp", "pty", "-listen", addr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	if err := Poll(ctx, 50*time.Millisecond, func() bool {
		conn, err := h1.dial(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}); err != nil {
		t.Fatal("the pty server never listened")
	}
	args := strings.Fields(os.Getenv("SHI_BENCH_ARGS"))
	for _, extra := range [][]string{nil, {"-backend", h1.Name}} {
		argv := append([]string{"env", api.EnvAgent + "=" + h1.URL, api.EnvToken + "=" + c.Token, c.Bin, "bench", "console", "-node", h0.Name, "-pty-server", addr}, extra...)
		out, err := c.NS.Host(1).Command(ctx, append(argv, args...)...).CombinedOutput()
		fmt.Printf("\n$ shi bench console -node %s %s (viewer on %s)\n%s", h0.Name, strings.Join(append(extra, args...), " "), h1.Name, out)
		if err != nil {
			t.Fatalf("shi bench console: %v", err)
		}
	}
}
