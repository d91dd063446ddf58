package main

// #include <stdint.h>
import "C"

import (
	"errors"
	"sync"
	"syscall"

	"shi/guest/evtchn"
)

// XENEVTCHN_NO_CLOEXEC (xenevtchn.h): the only flag xenevtchn_open knows.
const xenevtchnNoCloexec = 1

// evtchnHandle is an open xenevtchn_handle.
type evtchnHandle struct {
	h *evtchn.Handle

	mu       sync.Mutex
	restrict int // the only domain it may bind to (xenevtchn_restrict), -1 for any
}

var evtchns table[*evtchnHandle]

//export shiEvtchnOpen
func shiEvtchnOpen(flags C.uint) C.int {
	if flags&^xenevtchnNoCloexec != 0 {
		return -C.int(syscall.EINVAL)
	}
	c, err := self()
	if err != nil {
		return errno(err)
	}
	h, err := evtchn.Open(c)
	if err != nil {
		return errno(err)
	}
	return C.int(evtchns.add(&evtchnHandle{h: h, restrict: -1}))
}

//export shiEvtchnClose
func shiEvtchnClose(id C.int) C.int {
	e, ok := evtchns.remove(id)
	if !ok {
		return ebadf
	}
	return errno(e.h.Close())
}

//export shiEvtchnFd
func shiEvtchnFd(id C.int) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	return C.int(e.h.Fd())
}

//export shiEvtchnNotify
func shiEvtchnNotify(id C.int, port C.uint32_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	return errno(e.h.Notify(evtchn.Port(port)))
}

// allowed enforces xenevtchn_restrict, as the Linux driver does (EACCES).
func (e *evtchnHandle) allowed(dom uint32) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.restrict < 0 || uint32(e.restrict) == dom
}

//export shiEvtchnBindUnbound
func shiEvtchnBindUnbound(id C.int, dom C.uint32_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	if !e.allowed(uint32(dom)) {
		return -C.int(syscall.EACCES)
	}
	p, err := e.h.AllocUnbound(evtchn.DomID(dom))
	if err != nil {
		return errno(err)
	}
	return C.int(p)
}

//export shiEvtchnBindInterdomain
func shiEvtchnBindInterdomain(id C.int, dom, rport C.uint32_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	if !e.allowed(uint32(dom)) {
		return -C.int(syscall.EACCES)
	}
	p, err := e.h.BindInterdomain(evtchn.DomID(dom), evtchn.Port(rport))
	if err != nil {
		return errno(err)
	}
	return C.int(p)
}

//export shiEvtchnUnbind
func shiEvtchnUnbind(id C.int, port C.uint32_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	return errno(e.h.Unbind(evtchn.Port(port)))
}

// shiEvtchnPending is a read of the device: it blocks until a port fires
// and returns it masked.
//
//export shiEvtchnPending
func shiEvtchnPending(id C.int) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	for {
		p, err := e.h.Wait(-1)
		if errors.Is(err, evtchn.ErrNoEvent) {
			continue // cannot happen without a timeout; keep blocking as read(2) does
		}
		if err != nil {
			return errno(err)
		}
		return C.int(p)
	}
}

//export shiEvtchnUnmask
func shiEvtchnUnmask(id C.int, port C.uint32_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	return errno(e.h.Unmask(evtchn.Port(port)))
}

//export shiEvtchnRestrict
func shiEvtchnRestrict(id C.int, dom C.uint16_t) C.int {
	e, ok := evtchns.get(id)
	if !ok {
		return ebadf
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// As the Linux driver: one restriction per open file, to a real
	// domain.
	if e.restrict >= 0 {
		return -C.int(syscall.EACCES)
	}
	if dom == 0 || dom >= 0x7FF0 { // DOMID_FIRST_RESERVED
		return -C.int(syscall.EINVAL)
	}
	e.restrict = int(dom)
	return 0
}

// notifyLocal sends on a local port of any open handle, for the unmap
// and unshare notifications; false if no handle has it.
func notifyLocal(port uint32) bool {
	for _, e := range evtchns.all() {
		for _, p := range e.h.Ports() {
			if uint32(p) == port {
				e.h.Notify(p)
				return true
			}
		}
	}
	return false
}
