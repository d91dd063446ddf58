package conformance

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"shi/internal/nstest"
)

// testXenstore returns the path of Xen's test-xenstore and the environment
// it needs (its libraries come from .cache/xen when the system lacks them).
func testXenstore(t *testing.T) (string, []string) {
	t.Helper()
	root := nstest.ModuleRoot(t)
	bin := tool(t, filepath.Join(root, ".cache/xen/usr/lib/xen-4.17/bin/test-xenstore"))
	return bin, []string{"LD_LIBRARY_PATH=" + filepath.Join(root, ".cache/xen/usr/lib/x86_64-linux-gnu")}
}

// listTests returns the names test-xenstore -l prints ("name : text").
func listTests(t *testing.T, ctx context.Context, bin string, env []string) []string {
	t.Helper()
	r := run(t, ctx, env, bin, "-l")
	if r.code != 0 {
		t.Fatalf("test-xenstore -l: %+v", r)
	}
	var names []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	// The twelve tests of Xen 4.17; a different binary would change this.
	if len(names) != 12 {
		t.Fatalf("test-xenstore lists %d tests, want 12: %q", len(names), names)
	}
	return names
}

// TestTestXenstore runs Xen's own XenStore test suite against the agent:
// all tests together with many iterations, each test on its own (so that a
// failure names it), its random mode, and several copies at once (each
// works below its own xenstore-test/<pid>, so none may starve another's
// transactions).
func TestTestXenstore(t *testing.T) {
	_, px := sharedAgent(t)
	bin, env := testXenstore(t)
	env = append(env, "XENSTORED_PATH="+px.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	names := listTests(t, ctx, bin, env)
	// check runs test-xenstore and insists that every test it was asked for
	// reported a time (it prints "failed" otherwise, and nothing at all for
	// a -t name it does not know) and that no transaction ran out of retries.
	check := func(t *testing.T, want []string, args ...string) {
		t.Helper()
		mark := px.mark()
		r, err := runE(ctx, env, append([]string{bin}, args...)...)
		if err != nil {
			t.Error(err)
			return
		}
		bad := r.code != 0 || strings.Contains(r.stdout, "failed") || strings.Contains(r.stdout, "Exhaustive")
		for _, name := range want {
			if !strings.Contains(r.stdout, fmt.Sprintf("%-10s: avg: ", name)) {
				bad = true
			}
		}
		if bad {
			t.Errorf("test-xenstore %s: exit %d\nstdout:\n%s\nstderr:\n%s\nlast messages on the socket:\n%s",
				strings.Join(args, " "), r.code, r.stdout, r.stderr, px.since(mark, 40))
		}
	}
	t.Run("all", func(t *testing.T) { check(t, names, "-i", "20") })
	for _, name := range names {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) { check(t, []string{name}, "-t", name, "-i", "10") })
	}
	t.Run("random", func(t *testing.T) { check(t, nil, "-r", "2") })
	t.Run("parallel", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				check(t, names, "-i", "20")
			}()
		}
		wg.Wait()
	})
}
