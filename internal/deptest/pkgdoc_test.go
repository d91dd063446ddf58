package deptest

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestPackageDocs checks that every package has exactly one package
// comment (Tailscale's pkgdoc_test).
func TestPackageDocs(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}} {{join .GoFiles \" \"}} {{join .CgoFiles \" \"}}", "shi/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		docs := 0
		for _, name := range f[1:] {
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(f[0], name), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil {
				docs++
			}
		}
		if docs != 1 {
			t.Errorf("%s: %d package comments, want 1", f[0], docs)
		}
	}
}

// TestShiDeps keeps cmd/shi/deps.txt, the non-standard packages the shi
// binary links, up to date, so that a new dependency shows in review
// (Tailscale's depaware.txt). Regenerate with SHI_UPDATE_DEPS=1.
func TestShiDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "shi/cmd/shi").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(out))
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"
	root, err := exec.Command("go", "list", "-f", "{{.Dir}}", "shi/cmd/shi").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(strings.TrimSpace(string(root)), "deps.txt")
	if os.Getenv("SHI_UPDATE_DEPS") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("cmd/shi/deps.txt is stale (SHI_UPDATE_DEPS=1 go test ./internal/deptest rewrites it); shi now links:\n%s", got)
	}
}
