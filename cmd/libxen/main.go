// Command libxen is a replacement for Xen's libxenevtchn.so.1 and
// libxengnttab.so.1 (which also holds libxengntshr), built with
// -buildmode=c-shared from shi's guest library, so that unmodified Xen
// programs — Debian's libxenvchan and vchan-socket-proxy — run as shi
// domains: their event channels are guest/evtchn handles and their grants
// guest/gnttab shares and mappings, with the same semantics across hosts
// as on one (DESIGN.md §3). scripts/build-libxen.sh builds it; the agent
// starts domains whose config says xen_libs = 1 with it on
// LD_LIBRARY_PATH and LD_PRELOAD (spec/xen-abi.md §8.2).
//
// The library exports every function of the two libraries with Xen's
// symbol versions (xen.map), and, for vchan-socket-proxy, three functions
// of libxenctrl.so.4.17 (xc_interface_open, xc_interface_close,
// xc_domain_getinfo), which override the real ones when preloaded. One
// file serves both sonames, so a process has one Go runtime.
//
// The C prototypes are in xen.c; they call the Go functions here, which
// return a negative errno on failure. Handles are C structs holding the
// id of an entry in a Go table.
//
// Memory model: C code writes shared pages directly, so they stay in diff
// mode (never Explicit): a release compares them with their twins. A
// notify releases, a pending acquires, and a program waiting in select()
// on the event fd is covered by the library's background flush.
//
// Where it differs from Xen's libraries:
//   - xenevtchn_bind_virq, xenevtchn_fdopen and the dma-buf functions
//     fail with ENOSYS (shi has no virtual IRQs, devices or inherited
//     device descriptors); xengnttab_fd and xengntshr_fd are /dev/null.
//   - xengnttab_map_grant_refs maps the grants of one granter per call
//     (EINVAL for several).
//   - The event fd may turn readable for an event on a masked port
//     (guest/evtchn), where the device's would not; xenevtchn_pending
//     then blocks until an unmasked port fires. Programs that unmask what
//     pending returned before they poll again (libxenvchan) never see it.
//   - xc_domain_getinfo knows only whether a domain exists (on any host):
//     it fills domid, running and one online vcpu, and looks through
//     getinfoScan ids for the next domain from first_domid on.
package main

// #include <stdint.h>
import "C"

import (
	"errors"
	"sync"
	"syscall"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
)

func main() {}

// table holds the Go objects behind C handles.
type table[T any] struct {
	mu   sync.Mutex
	next int
	m    map[int]T
}

func (t *table[T]) add(v T) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[int]T{}
	}
	for {
		t.next++
		if t.next <= 0 { // wrapped: ids are positive C ints
			t.next = 1
		}
		if _, used := t.m[t.next]; !used {
			t.m[t.next] = v
			return t.next
		}
	}
}

func (t *table[T]) get(id C.int) (T, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.m[int(id)]
	return v, ok
}

func (t *table[T]) remove(id C.int) (T, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.m[int(id)]
	delete(t.m, int(id))
	return v, ok
}

func (t *table[T]) all() []T {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]T, 0, len(t.m))
	for _, v := range t.m {
		out = append(out, v)
	}
	return out
}

// errno is what a C caller sees of err, as a negative return.
func errno(err error) C.int {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return -C.int(e)
	case errors.Is(err, hv.ErrNotDomain):
		// What the real library says without /dev/xen/evtchn.
		return -C.int(syscall.ENOENT)
	case errors.Is(err, evtchn.ErrClosed), errors.Is(err, hv.ErrClosed):
		return -C.int(syscall.EBADF)
	case errors.Is(err, gnttab.ErrRevoked):
		return -C.int(syscall.EFAULT)
	}
	return -C.int(syscall.EIO)
}

var ebadf = -C.int(syscall.EBADF)

// self is the domain's agent connection, opened on first use: a program
// that loads the library but never calls it (a shell on the way to exec)
// never touches it.
func self() (*hv.Conn, error) { return hv.Self() }
