package domain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"shi/api"
)

// ErrSocketUnreachable means domains could not connect to the agent's
// XenStore socket: they run under uids of their own (DomainUID), and a
// directory on the socket's path does not let other users through.
var ErrSocketUnreachable = errors.New("domains cannot reach the XenStore socket")

// socketReachable checks that a process under a domain's uid can connect
// to the XenStore socket at path: every directory on the way lets others
// search it (o+x) and the socket lets others write (o+w). Domains are
// neither the owner nor in the group of anything here (their gid is their
// uid, with no supplementary groups), so only the "others" bits count.
// An agent that is not root runs its domains as itself: nothing to check.
//
// The agent does not change the modes itself: a directory someone made
// private (mktemp -d) stays private unless they say otherwise.
func socketReachable(path string) error {
	if _, ok := DomainUID(0); !ok {
		return nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s; domains run under uids of their own (%d + domid), so serve the socket from a directory every user may pass through (shi agent -xenstore-socket; the default is %s)",
			ErrSocketUnreachable, path, fmt.Sprintf(format, args...), DomainUIDBase, api.DefaultXenstoreSocket)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return fail("%v", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fail("%v", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fail("directory %s has mode %#o, which other users may not pass through (chmod o+x %s would let them)", d, fi.Mode().Perm(), d)
		}
		if d == "/" {
			break
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fail("%v", err)
	}
	if fi.Mode().Perm()&0o002 == 0 {
		return fail("the socket has mode %#o, which other users may not connect to", fi.Mode().Perm())
	}
	return nil
}
