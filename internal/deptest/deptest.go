// Package deptest checks the dependency rules of STYLE.md §1 at test
// time, as Tailscale's tstest/deptest does: `go list -deps` of a package
// must not contain forbidden packages. Test code only.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// Forbid fails t if pkg depends on any package whose path starts with one
// of the forbidden prefixes.
func Forbid(t *testing.T, pkg string, forbidden ...string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("%s depends on %s (forbidden: %s)", pkg, dep, f)
			}
		}
	}
}

// Cluster lists what guest, device and CLI code must never link.
var Cluster = []string{
	"github.com/hashicorp/memberlist",
	"github.com/hashicorp/raft",
	"shi/internal/agent",
	"shi/internal/directory",
	"shi/internal/membership",
}
