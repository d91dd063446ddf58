package main

// #include <stdint.h>
import "C"

import (
	"syscall"

	"shi/guest/evtchn"
	"shi/guest/hv"
)

// The libxenctrl functions vchan-socket-proxy calls in client mode, while
// it waits for its server: xc_interface_open (which in libxenctrl opens
// /dev/xen/privcmd) and, after each failed connection attempt,
// xc_domain_getinfo on the server's domain, to give up once it is gone.

var xcs table[*hv.Conn]

//export shiXcOpen
func shiXcOpen(flags C.uint) C.int {
	c, err := self()
	if err != nil {
		return errno(err)
	}
	return C.int(xcs.add(c))
}

//export shiXcClose
func shiXcClose(id C.int) C.int {
	if _, ok := xcs.remove(id); !ok {
		return ebadf
	}
	return 0
}

// getinfoScan bounds how many domain ids one xc_domain_getinfo looks
// through for the next domain that exists: the hypervisor answers for
// one domain at a time, not "the next one", as Xen's getdomaininfo does.
const getinfoScan = 1024

// domidFirstReserved is DOMID_FIRST_RESERVED: ids from here on are not
// domains.
const domidFirstReserved = 0x7FF0

// shiXcNextDomain finds the first domain that exists with an id from
// first on (among getinfoScan ids), as XEN_DOMCTL_getdomaininfo does;
// ESRCH if there is none, which is what vchan-socket-proxy waits for.
//
//export shiXcNextDomain
func shiXcNextDomain(id C.int, first C.uint32_t, domid *C.uint32_t) C.int {
	c, ok := xcs.get(id)
	if !ok {
		return ebadf
	}
	for d := uint32(first); d < domidFirstReserved && d < uint32(first)+getinfoScan; d++ {
		ok, err := evtchn.DomainExists(c, evtchn.DomID(d))
		if err != nil {
			return errno(err)
		}
		if ok {
			*domid = C.uint32_t(d)
			return 0
		}
	}
	return -C.int(syscall.ESRCH)
}
