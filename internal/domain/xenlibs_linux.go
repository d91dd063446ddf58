package domain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoXenLibs means a domain asked for xen_libs = 1 on a host whose agent
// has no replacement Xen libraries.
var ErrNoXenLibs = errors.New("xen_libs = 1 needs the agent to be started with -xen-libs DIR, a directory built by scripts/build-libxen.sh DIR")

// The replacement libraries in a -xen-libs directory: one file, the other
// name a symlink to it (scripts/build-libxen.sh).
const (
	xenLibEvtchn  = "libxenevtchn.so.1"
	xenLibGnttab  = "libxengnttab.so.1"
	envLibPath    = "LD_LIBRARY_PATH"
	envPreload    = "LD_PRELOAD"
	envGodebug    = "GODEBUG"
	noPreempt     = "asyncpreemptoff=1"
	libPathSep    = ":"
	preloadSep    = " "
	xenLibsScript = "scripts/build-libxen.sh"
)

// xenLibsEnv returns what a domain with cfg adds to its environment for
// the replacement libraries: LD_LIBRARY_PATH (the libraries shadow
// Debian's, which libxenvchan and libxenctrl link against) and LD_PRELOAD
// (the library also overrides libxenctrl's xc_* functions, and a
// preloaded library stays loaded through `sh -c '... exec prog'`). The
// domain's own values of either are kept, after ours. GODEBUG gets
// asyncpreemptoff=1: the library is Go, and the runtime's preemption
// signal may land on a thread that has returned to C, where it makes a
// blocking select() fail with EINTR, which vchan-socket-proxy treats as
// fatal (the runtime reads it only at its start, so the library cannot
// set it itself). It fails if the
// domain asks for the libraries and this host has none, or its domains
// could not read them.
func (m *Manager) xenLibsEnv(cfg *Config) ([]string, error) {
	if !cfg.XenLibs {
		return nil, nil
	}
	dir := m.cfg.XenLibs
	if dir == "" {
		return nil, fmt.Errorf("%w (the agent of host %q has none)", ErrNoXenLibs, m.cfg.Host)
	}
	if err := xenLibsReachable(dir); err != nil {
		return nil, err
	}
	libPath, preload, godebug := dir, filepath.Join(dir, xenLibEvtchn), noPreempt
	for _, e := range cfg.Env {
		if v, ok := strings.CutPrefix(e, envGodebug+"="); ok && v != "" {
			godebug = v + "," + noPreempt
		}
		if v, ok := strings.CutPrefix(e, envLibPath+"="); ok && v != "" {
			libPath += libPathSep + v
		}
		if v, ok := strings.CutPrefix(e, envPreload+"="); ok && v != "" {
			preload += preloadSep + v
		}
	}
	return []string{envLibPath + "=" + libPath, envPreload + "=" + preload, envGodebug + "=" + godebug}, nil
}

// xenLibsReachable checks that a domain, under a uid of its own, can load
// the libraries in dir: every directory on the way lets others through
// and the library lets others read it (see socketReachable).
func xenLibsReachable(dir string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrNoXenLibs, dir, fmt.Sprintf(format, args...))
	}
	for _, name := range []string{xenLibEvtchn, xenLibGnttab} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return fail("%v (build them with %s %s)", err, xenLibsScript, dir)
		}
	}
	if _, ok := DomainUID(0); !ok {
		return nil // domains run as the agent's user
	}
	lib, err := filepath.EvalSymlinks(filepath.Join(dir, xenLibEvtchn))
	if err != nil {
		return fail("%v", err)
	}
	for d := filepath.Dir(lib); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fail("%v", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fail("directory %s has mode %#o, which other users may not pass through, and domains run under uids of their own (%d + domid) (chmod o+x %s would let them)", d, fi.Mode().Perm(), DomainUIDBase, d)
		}
		if d == "/" {
			break
		}
	}
	if fi, err := os.Stat(lib); err != nil || fi.Mode().Perm()&0o004 == 0 {
		return fail("%s is not readable by other users, and domains run under uids of their own (chmod o+r %s would let them)", lib, lib)
	}
	return nil
}
