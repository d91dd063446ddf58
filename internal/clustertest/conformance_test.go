package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shi/internal/nstest"
)

// testXenstore is Xen's own XenStore test suite, unpacked by scripts/deps.sh.
const testXenstore = ".cache/xen/usr/lib/xen-4.17/bin/test-xenstore"

// TestConformance runs clients nobody here wrote against a follower of a
// 3-host cluster: Xen's test-xenstore (every test, 3 iterations) and
// Debian's xenstore-* tools, error cases included. What the tools change
// on the follower must show on the leader.
func TestConformance(t *testing.T) {
	c := Start(t, Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := c.Leader(ctx)
	f := c.Host((l + 1) % 3)
	t.Logf("running Xen's clients against %s, a follower (%s leads)", f.Name, c.Host(l).Name)

	t.Run("test-xenstore", func(t *testing.T) {
		bin := filepath.Join(nstest.ModuleRoot(t), testXenstore)
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%v (run scripts/deps.sh)", err)
		}
		start := time.Now()
		cmd := exec.CommandContext(ctx, bin, "-i", "3")
		cmd.Env = append(os.Environ(), f.Env()...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("test-xenstore -i 3 against %s: %v\n%s", f.Name, err, out)
		}
		t.Logf("test-xenstore -i 3 passed in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	})

	t.Run("xenstore-utils", func(t *testing.T) {
		for _, tc := range []struct {
			args     []string
			rc       int
			out, err string // exact stdout; a substring of stderr
		}{
			{args: []string{"xenstore-write", "/ct/a", "hello", "/ct/b", "world"}},
			{args: []string{"xenstore-read", "/ct/a", "/ct/b"}, out: "hello\nworld\n"},
			{args: []string{"xenstore-read", "-p", "/ct/b"}, out: "/ct/b: world\n"},
			{args: []string{"xenstore-read", "/ct/missing"}, rc: 1, err: "couldn't read path /ct/missing"},
			{args: []string{"xenstore-read", "/ct/a/b/c"}, rc: 1, err: "couldn't read path /ct/a/b/c"},
			{args: []string{"xenstore-read"}, rc: 1, err: "Usage"},
			{args: []string{"xenstore-exists", "/ct/a"}},
			{args: []string{"xenstore-exists", "/ct/missing"}, rc: 1},
			{args: []string{"xenstore-ls", "/ct"}, out: "a = \"hello\"\nb = \"world\"\n"},
			{args: []string{"xenstore-ls", "/ct/missing"}, rc: 1, err: "No such file or directory"},
			{args: []string{"xenstore-list", "/ct"}, out: "a\nb\n"},
			{args: []string{"xenstore-list", "/ct/missing"}, rc: 1, err: "could not list path /ct/missing"},
			{args: []string{"xenstore-chmod", "/ct/a", "n0", "r5"}},
			{args: []string{"xenstore-ls", "-p", "/ct"}, out: "a = \"hello\"  . . . . . . . . . . . . . . . . . . . . . . . .  (n0,r5)\n" +
				"b = \"world\"  . . . . . . . . . . . . . . . . . . . . . . . .  (n0)\n"},
			{args: []string{"xenstore-chmod", "/ct/missing", "r0"}, rc: 1, err: "No such file or directory"},
			{args: []string{"xenstore-write", "/ct/sp ace", "1"}, rc: 1, err: "could not write path /ct/sp ace"},
			{args: []string{"xenstore-write", "/ct//d", "1"}, rc: 1, err: "could not write path /ct//d"},
			{args: []string{"xenstore-write", "/ct/big", strings.Repeat("x", 5000)}, rc: 1, err: "could not write path /ct/big"},
			{args: []string{"xenstore-write", "/ct/a"}, rc: 1, err: "Usage"},
			{args: []string{"xenstore-rm", "/ct/a"}},
			{args: []string{"xenstore-read", "/ct/a"}, rc: 1, err: "couldn't read path /ct/a"},
			{args: []string{"xenstore-rm", "/ct/missing"}},
			{args: []string{"xenstore-rm", "/"}, rc: 1, err: "could not remove path /"},
			{args: []string{"xenstore-write", "/ct/t/u/v", "1"}},
			{args: []string{"xenstore-rm", "-t", "/ct/t/u/v"}},
			{args: []string{"xenstore-exists", "/ct/t"}, rc: 1},
		} {
			name := strings.Join(tc.args, " ")
			cmd := exec.CommandContext(ctx, tc.args[0], tc.args[1:]...)
			cmd.Env = append(os.Environ(), f.Env()...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			rc := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if rc != tc.rc || stdout.String() != tc.out || !strings.Contains(stderr.String(), tc.err) {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
					name, rc, stdout.String(), stderr.String(), tc.rc, tc.out, tc.err)
			}
		}
		// Everything the tools changed on the follower is on the leader.
		lh := c.Host(l)
		eventually(t, 10*time.Second, "the tools' changes on the leader", func() error {
			d, err := dumpHost(lh, "/ct")
			if err != nil {
				return err
			}
			want := map[string]Node{"/ct": {Perms: "n0"}, "/ct/b": {Value: "world", Perms: "n0"}}
			if diff := DiffDumps(want, d); diff != "" {
				return errors.New(diff)
			}
			return nil
		})
	})

	t.Run("xenstore-watch", func(t *testing.T) {
		// The watch is on the follower; the change is made on the leader.
		cmd := exec.CommandContext(ctx, "xenstore-watch", "-n", "2", "/ct/w")
		cmd.Env = append(os.Environ(), f.Env()...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() || lines.Text() != "/ct/w" {
			t.Fatalf("xenstore-watch: first line %q, want the watch's own event /ct/w (%v; stderr %q)", lines.Text(), lines.Err(), stderr.String())
		}
		if err := c.Host(l).XS().Write("/ct/w/x", []byte("1")); err != nil {
			t.Fatal(err)
		}
		if !lines.Scan() || lines.Text() != "/ct/w/x" {
			t.Fatalf("xenstore-watch: second line %q, want /ct/w/x (%v; stderr %q)", lines.Text(), lines.Err(), stderr.String())
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("xenstore-watch -n 2: %v (stderr %q)", err, stderr.String())
		}
	})
}
