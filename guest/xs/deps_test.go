package xs_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps guest/xs linkable by domains: of this module it may use
// only the layers STYLE.md allows guest code (abi, ring, xenstore/wire,
// shm), and no cluster library at all.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "shi/guest/xs", "shi/guest/xs/xstest").Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"shi/guest/xs": true, "shi/guest/xs/xstest": true,
		"shi/internal/abi": true, "shi/internal/ring": true,
		"shi/internal/xenstore/wire": true, "shi/internal/shm": true,
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "shi/") && !allowed[p] || strings.Contains(p, "hashicorp") || p == "testing" {
			t.Errorf("guest/xs depends on %s", p)
		}
	}
}
