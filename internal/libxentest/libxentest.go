// Package libxentest builds shi's replacement Xen libraries (cmd/libxen,
// with scripts/build-libxen.sh) for tests that run unmodified Xen
// programs as domains, and finds the Xen programs deps.sh installs.
package libxentest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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

// Build builds the libraries into a new directory every user may read
// and pass through (domains run under uids of their own), removed when
// the test ends, and returns it. A copy of vchan-socket-proxy goes there
// too (see Proxy), so domains can run it wherever the repository is.
func Build(t testing.TB) string {
	t.Helper()
	dir, err := WorldDir("shi-libxen-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(filepath.Join(Root(), "scripts/build-libxen.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-libxen.sh: %v\n%s", err, out)
	}
	// Only tests that run the proxy need it (they check it is there).
	if bin, err := os.ReadFile(VchanSocketProxy()); err == nil {
		if err := errors.Join(os.WriteFile(Proxy(dir), bin, 0o755), os.Chmod(Proxy(dir), 0o755)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// NeedProxy fails the test if Build found no vchan-socket-proxy.
func NeedProxy(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(Proxy(dir)); err != nil {
		t.Fatalf("no vchan-socket-proxy: %s is missing (scripts/deps.sh unpacks it from xen-utils-4.17)", VchanSocketProxy())
	}
}

// Proxy is where Build put vchan-socket-proxy.
func Proxy(dir string) string { return filepath.Join(dir, "vchan-socket-proxy") }

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
	return []string{"LD_LIBRARY_PATH=" + dir, "LD_PRELOAD=" + filepath.Join(dir, "libxenevtchn.so.1"), "GODEBUG=asyncpreemptoff=1"}
}

// Shell quotes s for sh.
func Shell(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
