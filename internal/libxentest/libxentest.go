// Package libxentest builds shi's replacement Xen libraries (cmd/libxen,
// with scripts/build-libxen.sh) for tests that run unmodified Xen
// programs as domains, and finds the Xen programs deps.sh installs.
package libxentest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// VchanSocketProxy is Debian's vchan-socket-proxy, which scripts/deps.sh
// unpacks from xen-utils-4.17.
func VchanSocketProxy() string {
	return filepath.Join(Root(), ".cache/xen/usr/lib/xen-4.17/bin/vchan-socket-proxy")
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// Build builds the libraries once per test process into a directory
// every user may read and pass through (domains run under uids of their
// own), and returns it. The directory is removed by Cleanup.
func Build(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := WorldDir("shi-libxen-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		cmd := exec.Command(filepath.Join(Root(), "scripts/build-libxen.sh"), dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("scripts/build-libxen.sh: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// Cleanup removes what Build made; call it from TestMain after the tests.
func Cleanup() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// WorldDir makes a new directory under the system's temporary directory
// that every user may pass through and write to (mode 1777, like /tmp),
// for the libraries and for sockets that domains and tests share.
func WorldDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			os.RemoveAll(dir)
			return "", fmt.Errorf("libxentest: %s is not reachable by other users (TMPDIR=%s)", d, os.Getenv("TMPDIR"))
		}
	}
	return dir, nil
}

// Env is the environment a domain gets to run with the libraries in dir,
// as the agent's -xen-libs does.
func Env(dir string) []string {
	return []string{"LD_LIBRARY_PATH=" + dir, "LD_PRELOAD=" + filepath.Join(dir, "libxenevtchn.so.1")}
}

// Shell quotes s for sh.
func Shell(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
