package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// binDirPrefix names the per-process directory of built binaries,
// "<tmp>/shint-bin-<pid>-*"; New removes those of dead processes.
const binDirPrefix = "shint-bin-"

var builds struct {
	mu    sync.Mutex
	dir   string
	pkgs  map[string]*build
	names map[string]bool // binary names taken in dir
}

type build struct {
	once sync.Once
	path string
	err  error
}

// BuildShi builds ./cmd/shi once per test process and returns the binary.
func BuildShi(t testing.TB) string { return Build(t, "./cmd/shi") }

// Build builds the main package pkg ("./cmd/x" from the module root, or an
// import path) once per test process and returns the binary's path. The
// binary stays until the process exits (and is removed by a later New).
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	if builds.pkgs == nil {
		builds.pkgs = map[string]*build{}
	}
	b := builds.pkgs[pkg]
	if b == nil {
		b = &build{}
		builds.pkgs[pkg] = b
	}
	builds.mu.Unlock()

	b.once.Do(func() { b.path, b.err = goBuild(pkg) })
	if b.err != nil {
		t.Fatalf("nstest: %v", b.err)
	}
	return b.path
}

func goBuild(pkg string) (string, error) {
	builds.mu.Lock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
		if err != nil {
			builds.mu.Unlock()
			return "", err
		}
		builds.dir = dir
	}
	// Two packages may end in the same name.
	if builds.names == nil {
		builds.names = map[string]bool{}
	}
	base := path.Base(strings.TrimSuffix(pkg, "/"))
	name := base
	for i := 2; builds.names[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	builds.names[name] = true
	out := filepath.Join(builds.dir, name)
	builds.mu.Unlock()

	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// ModuleRoot returns the directory of the go.mod above the working
// directory (a test runs in its package's directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	return root
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
