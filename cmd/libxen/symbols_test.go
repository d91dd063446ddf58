package main

import (
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"shi/internal/libxentest"
)

// debianLibs holds the libraries scripts/deps.sh installs (libxenmisc4.17
// depends on libxenevtchn1 and libxengnttab1).
const debianLibs = "/lib/x86_64-linux-gnu"

// defined lists the symbols an ELF shared object defines, as
// name@version, with its version nodes.
func defined(t *testing.T, path string) (syms []string, soname string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%v (scripts/deps.sh installs Debian's Xen libraries)", err)
	}
	defer f.Close()
	ds, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ds {
		if s.Section == elf.SHN_UNDEF {
			continue
		}
		syms = append(syms, s.Name+"@"+s.Version)
	}
	names, err := f.DynString(elf.DT_SONAME)
	if err != nil || len(names) != 1 {
		t.Fatalf("%s: soname %v %v", path, names, err)
	}
	slices.Sort(syms)
	return syms, names[0]
}

// TestSymbols checks that the library defines every symbol, with its
// version, that Debian's libxenevtchn.so.1 and libxengnttab.so.1 define,
// the libxenctrl.so.4.17 functions it overrides with theirs, and munmap.
func TestSymbols(t *testing.T) {
	dir := libxentest.Build(t)
	ours, soname := defined(t, filepath.Join(dir, "libxenevtchn.so.1"))
	if soname != "libxenevtchn.so.1" {
		t.Errorf("soname %q, want libxenevtchn.so.1", soname)
	}
	if target, err := os.Readlink(filepath.Join(dir, "libxengnttab.so.1")); err != nil || target != "libxenevtchn.so.1" {
		t.Errorf("libxengnttab.so.1 -> %q (%v), want a symlink to libxenevtchn.so.1", target, err)
	}
	var want []string
	for _, lib := range []string{"libxenevtchn.so.1", "libxengnttab.so.1"} {
		syms, _ := defined(t, filepath.Join(debianLibs, lib))
		if len(syms) < 10 {
			t.Fatalf("%s defines only %v", lib, syms)
		}
		want = append(want, syms...)
	}
	ctrl, _ := defined(t, filepath.Join(debianLibs, "libxenctrl.so.4.17"))
	for _, s := range []string{"xc_interface_open@VERS_4.17.0", "xc_interface_close@VERS_4.17.0", "xc_domain_getinfo@VERS_4.17.0"} {
		if !slices.Contains(ctrl, s) {
			t.Errorf("Debian's libxenctrl.so.4.17 has no %s: the override would not take", s)
		}
		want = append(want, s)
	}
	for _, s := range want {
		if !slices.Contains(ours, s) {
			t.Errorf("missing %s", s)
		}
	}
	// munmap interposes glibc's, for grant memory (xen.c).
	extra := []string{"VERS_4.17.0@VERS_4.17.0", "GLIBC_2.2.5@GLIBC_2.2.5", "munmap@GLIBC_2.2.5"}
	if !slices.Contains(ours, "munmap@GLIBC_2.2.5") {
		t.Errorf("missing munmap@GLIBC_2.2.5")
	}
	// Nothing else leaks out: the Go runtime's symbols stay local.
	for _, s := range ours {
		if !slices.Contains(want, s) && !slices.Contains(extra, s) {
			t.Errorf("unexpected export %s", s)
		}
	}
	t.Logf("%d symbols, as Debian's libraries (%s)", len(ours), debianLibs)
}
