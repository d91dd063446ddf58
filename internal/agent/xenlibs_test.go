package agent

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -xen-libs names the directory of scripts/build-libxen.sh's libraries:
// made absolute (domains start elsewhere), and refused at start when the
// libraries are not there.
func TestXenLibsFlag(t *testing.T) {
	dir := t.TempDir()
	if _, err := parseFlags([]string{"-dev", "-xen-libs", dir}, io.Discard); err == nil || !strings.Contains(err.Error(), "build-libxen.sh") {
		t.Fatalf("an empty -xen-libs directory: %v, want an error naming scripts/build-libxen.sh", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "libxenevtchn.so.1"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(dir))
	cfg, err := parseFlags([]string{"-dev", "-xen-libs", filepath.Base(dir)}, io.Discard)
	if err != nil || cfg.XenLibs != dir {
		t.Fatalf("-xen-libs %s: %q, %v; want %q", filepath.Base(dir), cfg.XenLibs, err, dir)
	}
	if cfg, err := parseFlags([]string{"-dev"}, io.Discard); err != nil || cfg.XenLibs != "" {
		t.Fatalf("no -xen-libs: %q, %v", cfg.XenLibs, err)
	}
}
