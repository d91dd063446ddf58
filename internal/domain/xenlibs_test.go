package domain

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestXenLibsKey(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want bool
		err  string
	}{
		{"name = \"a\"\ncmd = \"/bin/true\"\n", false, ""},
		{"name = \"a\"\ncmd = \"/bin/true\"\nxen_libs = 1\n", true, ""},
		{"name = \"a\"\ncmd = \"/bin/true\"\nxen_libs = 0\n", false, ""},
		{"name = \"a\"\ncmd = \"/bin/true\"\nxen_libs = 2\n", false, "out of range"},
		{"name = \"a\"\ncmd = \"/bin/true\"\nxen_libs = \"yes\"\n", false, "want a number"},
	} {
		c, err := ParseConfig(tc.src)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.src, err, tc.err)
			}
			continue
		}
		if err != nil || c.XenLibs != tc.want {
			t.Errorf("%q: XenLibs %v, %v; want %v", tc.src, c != nil && c.XenLibs, err, tc.want)
		}
	}
}

// libDir makes a directory holding the two library names, as
// scripts/build-libxen.sh does, with mode mode.
func libDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shi-xenlibs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, xenLibEvtchn), []byte("lib"), 0o755),
		os.Symlink(xenLibEvtchn, filepath.Join(dir, xenLibGnttab)),
		os.Chmod(dir, mode)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestXenLibsEnv(t *testing.T) {
	dir := libDir(t, 0o755)
	m := &Manager{cfg: ManagerConfig{Host: "h", XenLibs: dir}}

	env, err := m.xenLibsEnv(&Config{})
	if err != nil || env != nil {
		t.Errorf("without xen_libs: %v %v, want nothing", env, err)
	}
	env, err = m.xenLibsEnv(&Config{XenLibs: true, Env: []string{"LD_LIBRARY_PATH=/opt/lib", "LD_PRELOAD=/opt/x.so", "A=b"}})
	want := []string{"LD_LIBRARY_PATH=" + dir + ":/opt/lib", "LD_PRELOAD=" + dir + "/libxenevtchn.so.1 /opt/x.so", "GODEBUG=asyncpreemptoff=1"}
	if err != nil || !slices.Equal(env, want) {
		t.Errorf("env %q, %v; want %q", env, err, want)
	}

	none := &Manager{cfg: ManagerConfig{Host: "h"}}
	if _, err := none.xenLibsEnv(&Config{XenLibs: true}); !errors.Is(err, ErrNoXenLibs) || !strings.Contains(err.Error(), "-xen-libs") {
		t.Errorf("no -xen-libs: %v, want ErrNoXenLibs naming the flag", err)
	}

	empty := &Manager{cfg: ManagerConfig{Host: "h", XenLibs: t.TempDir()}}
	if _, err := empty.xenLibsEnv(&Config{XenLibs: true}); !errors.Is(err, ErrNoXenLibs) || !strings.Contains(err.Error(), "build-libxen.sh") {
		t.Errorf("empty directory: %v, want ErrNoXenLibs naming the script", err)
	}

	if _, ok := DomainUID(0); ok {
		private := &Manager{cfg: ManagerConfig{Host: "h", XenLibs: libDir(t, 0o700)}}
		if _, err := private.xenLibsEnv(&Config{XenLibs: true}); !errors.Is(err, ErrNoXenLibs) || !strings.Contains(err.Error(), "pass through") {
			t.Errorf("private directory: %v, want ErrNoXenLibs saying other users may not pass", err)
		}
	}
}
