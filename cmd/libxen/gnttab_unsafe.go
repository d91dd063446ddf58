package main

// #include <stddef.h>
// #include <stdint.h>
// void shiRangeAdd(uintptr_t start, size_t len);
// void shiRangeDel(uintptr_t start);
import "C"

import (
	"errors"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"shi/guest/gnttab"
	"shi/internal/abi"
)

// mmap's PROT_WRITE: a map is writable when prot has it.
const protWrite = 0x2

// noNotify is the C callers' "no notification" (-1) for an offset or a
// port, which Xen also assumes for an offset past the page.
const noNotify = 0xFFFFFFFF

// gnttabHandle is an open xengnttab_handle.
type gnttabHandle struct {
	device

	mu    sync.Mutex
	pages int // mapped through it
	limit int // xengnttab_set_max_grants, 0 for none
}

// Memory the library mapped for the program, by start address: grant
// mappings and shares. They outlive their handles (as a gntdev or
// gntalloc mapping outlives its descriptor) until the program unmaps
// them, with the library's calls or with munmap (see xen.c), which
// libxenvchan uses for its paged rings.
var regions struct {
	mu     sync.Mutex
	maps   map[uintptr]*mapped
	shares map[uintptr]*share
}

// mapped is a grant mapping and the handle it was made through.
type mapped struct {
	mp    *gnttab.Mapping
	owner *gnttabHandle
}

func init() {
	regions.maps = map[uintptr]*mapped{}
	regions.shares = map[uintptr]*share{}
}

// addRegion records memory for the munmap interposer (xen.c).
func addRegion(b []byte) { C.shiRangeAdd(C.uintptr_t(addrOf(b)), C.size_t(len(b))) }

func removeRegion(addr uintptr) { C.shiRangeDel(C.uintptr_t(addr)) }

var gnttabs table[*gnttabHandle]

// device is what both kinds of handle hold: a grant-table handle, and
// a descriptor for xengnttab_fd and xengntshr_fd, which hand out the
// device's. shi has no device, and callers only keep it (or pass it to
// xentoolcore's restrict, which dup2s /dev/null over it): /dev/null.
type device struct {
	h    *gnttab.Handle
	null int
}

func (d *device) dev() *device { return d }

// openDevice opens a device of this process's domain.
func openDevice() (device, error) {
	c, err := self()
	if err != nil {
		return device{}, err
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return device{}, err
	}
	return device{h: gnttab.Open(c), null: fd}, nil
}

// closeHandle forgets a handle of t and closes its descriptor.
func closeHandle[T interface{ dev() *device }](t *table[T], id C.int) C.int {
	g, ok := t.remove(id)
	if !ok {
		return ebadf
	}
	return errno(syscall.Close(g.dev().null))
}

// handleFd is a handle's descriptor.
func handleFd[T interface{ dev() *device }](t *table[T], id C.int) C.int {
	g, ok := t.get(id)
	if !ok {
		return ebadf
	}
	return C.int(g.dev().null)
}

//export shiGnttabOpen
func shiGnttabOpen(flags C.uint) C.int {
	d, err := openDevice()
	if err != nil {
		return errno(err)
	}
	return C.int(gnttabs.add(&gnttabHandle{device: d}))
}

// shiGnttabClose forgets the handle. Its mappings stay, as a Linux
// gntdev mapping outlives the descriptor until it is unmapped; the
// agent reclaims them when the domain ends.
//
//export shiGnttabClose
func shiGnttabClose(id C.int) C.int { return closeHandle(&gnttabs, id) }

//export shiGnttabFd
func shiGnttabFd(id C.int) C.int { return handleFd(&gnttabs, id) }

// shiGnttabMap maps count grants side by side: refs[i] of domids[i] if
// perRef, else all of domids[0]. The pages are mmap'd memfds (never Go
// memory), so the address stays valid until unmapped.
//
//export shiGnttabMap
func shiGnttabMap(id C.int, count C.uint32_t, domids *C.uint32_t, perRef C.int, refs *C.uint32_t, prot C.int, notifyOff, notifyPort C.uint32_t, out *C.uintptr_t) C.int {
	g, ok := gnttabs.get(id)
	if !ok {
		return ebadf
	}
	if count == 0 || count > 1<<20 {
		return -C.int(syscall.EINVAL)
	}
	n := int(count)
	ds := unsafe.Slice(domids, 1)
	if perRef != 0 {
		ds = unsafe.Slice(domids, n)
	}
	rs := make([]gnttab.Ref, n)
	for i, r := range unsafe.Slice(refs, n) {
		rs[i] = gnttab.Ref(r)
		if ds[min(i, len(ds)-1)] != ds[0] {
			// Pages of several granters at one address would take a
			// mapping per page; shi's maps are per granter.
			return -C.int(syscall.EINVAL)
		}
	}
	g.mu.Lock()
	if g.limit > 0 && g.pages+n > g.limit {
		g.mu.Unlock()
		return -C.int(syscall.ENOMEM)
	}
	g.pages += n // reserved while mapping
	g.mu.Unlock()

	dom := gnttab.DomID(ds[0])
	writable := prot&protWrite != 0
	var mp *gnttab.Mapping
	var err error
	if n == 1 && (notifyOff != noNotify || notifyPort != noNotify) {
		off := uint32(notifyOff)
		if off >= abi.PAGE_SIZE {
			off = gnttab.NoNotify
		}
		mp, err = g.h.MapNotify(dom, rs[0], writable, off, uint32(notifyPort))
	} else {
		mp, err = g.h.Map(dom, rs, writable)
	}
	if err != nil {
		g.mu.Lock()
		g.pages -= n
		g.mu.Unlock()
		return errno(err)
	}
	addr := addrOf(mp.Bytes())
	regions.mu.Lock()
	regions.maps[addr] = &mapped{mp: mp, owner: g}
	regions.mu.Unlock()
	addRegion(mp.Bytes())
	*out = C.uintptr_t(addr)
	return 0
}

// unmapRegion ends a mapping the program is done with.
func unmapRegion(addr uintptr, m *mapped) error {
	removeRegion(addr)
	m.owner.mu.Lock()
	m.owner.pages -= len(m.mp.Bytes()) / abi.PAGE_SIZE
	m.owner.mu.Unlock()
	return m.owner.h.Unmap(m.mp)
}

//export shiGnttabUnmap
func shiGnttabUnmap(id C.int, start unsafe.Pointer, count C.uint32_t) C.int {
	g, ok := gnttabs.get(id)
	if !ok {
		return ebadf
	}
	addr := uintptr(start)
	regions.mu.Lock()
	m := regions.maps[addr]
	if m == nil || m.owner != g || len(m.mp.Bytes()) != int(count)*abi.PAGE_SIZE {
		regions.mu.Unlock()
		return -C.int(syscall.EINVAL)
	}
	delete(regions.maps, addr)
	regions.mu.Unlock()
	return errno(unmapRegion(addr, m))
}

//export shiGnttabSetMaxGrants
func shiGnttabSetMaxGrants(id C.int, n C.uint32_t) C.int {
	g, ok := gnttabs.get(id)
	if !ok {
		return ebadf
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limit = int(n)
	return 0
}

// shiGnttabCopy runs one xengnttab_grant_copy segment; a side without its
// gref flag is the caller's memory at src or dst. The segment's status
// gets the GNTST_* result; a malformed segment fails the whole call with
// EINVAL, as the Linux driver does.
//
//export shiGnttabCopy
func shiGnttabCopy(id C.int, flags, length C.uint16_t,
	sref C.uint32_t, soff, sdom C.uint16_t, src unsafe.Pointer,
	dref C.uint32_t, doff, ddom C.uint16_t, dst unsafe.Pointer,
	status *C.int16_t) C.int {
	g, ok := gnttabs.get(id)
	if !ok {
		return ebadf
	}
	n := int(length)
	srcGref, dstGref := flags&abi.GNTCOPY_source_gref != 0, flags&abi.GNTCOPY_dest_gref != 0
	if (srcGref && int(soff)+n > abi.PAGE_SIZE) || (dstGref && int(doff)+n > abi.PAGE_SIZE) || (!srcGref && !dstGref) {
		return -C.int(syscall.EINVAL)
	}
	var err error
	switch {
	case srcGref && dstGref:
		op := abi.GnttabCopy{
			Source: abi.GnttabCopyPtr{U: uint64(sref), Domid: abi.DomID(sdom), Offset: uint16(soff)},
			Dest:   abi.GnttabCopyPtr{U: uint64(dref), Domid: abi.DomID(ddom), Offset: uint16(doff)},
			Len:    uint16(n), Flags: abi.GNTCOPY_source_gref | abi.GNTCOPY_dest_gref,
		}
		_, err = g.h.Copy(op, nil)
	case srcGref:
		err = g.h.CopyFrom(unsafe.Slice((*byte)(dst), n), gnttab.DomID(sdom), gnttab.Ref(sref), uint16(soff))
	default:
		err = g.h.CopyTo(gnttab.DomID(ddom), gnttab.Ref(dref), uint16(doff), unsafe.Slice((*byte)(src), n))
	}
	*status = C.int16_t(grantStatus(err))
	return 0
}

// grantStatus is the GNTST_* code of a grant operation's outcome.
func grantStatus(err error) int16 {
	var se *gnttab.StatusError
	switch {
	case err == nil:
		return abi.GNTST_okay
	case errors.As(err, &se):
		return se.Status
	case errors.Is(err, syscall.ESRCH):
		return abi.GNTST_bad_domain
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return abi.GNTST_permission_denied
	}
	return abi.GNTST_general_error
}

// gntshrHandle is an open xengntshr_handle.
type gntshrHandle struct{ device }

// share is pages granted with xengntshr_share_pages or _page_notify.
type share struct {
	s          *gnttab.Share
	owner      *gntshrHandle
	notifyOff  uint32
	notifyPort uint32
}

var gntshrs table[*gntshrHandle]

//export shiGntshrOpen
func shiGntshrOpen(flags C.uint) C.int {
	d, err := openDevice()
	if err != nil {
		return errno(err)
	}
	return C.int(gntshrs.add(&gntshrHandle{device: d}))
}

// shiGntshrClose forgets the handle; its shares stay until unshared, as
// gntalloc's do until they are unmapped.
//
//export shiGntshrClose
func shiGntshrClose(id C.int) C.int { return closeHandle(&gntshrs, id) }

//export shiGntshrFd
func shiGntshrFd(id C.int) C.int { return handleFd(&gntshrs, id) }

// shiGntshrShare makes count zeroed pages, grants each to dom and writes
// the refs to refs. With a notification (one page only), the byte at
// notifyOff is cleared and notifyPort sent on when the page is unshared
// or the domain dies.
//
//export shiGntshrShare
func shiGntshrShare(id C.int, dom C.uint32_t, count C.int, refs *C.uint32_t, writable C.int, notifyOff, notifyPort C.uint32_t, start *C.uintptr_t) C.int {
	g, ok := gntshrs.get(id)
	if !ok {
		return ebadf
	}
	if count <= 0 || count > 1<<20 {
		return -C.int(syscall.EINVAL)
	}
	off, port := uint32(notifyOff), uint32(notifyPort)
	if off >= abi.PAGE_SIZE {
		off = gnttab.NoNotify
	}
	s, err := g.h.SharePagesNotify(gnttab.DomID(dom), int(count), writable != 0, off, port)
	if err != nil {
		return errno(err)
	}
	out := unsafe.Slice(refs, int(count))
	for i, r := range s.Refs {
		out[i] = C.uint32_t(r)
	}
	addr := addrOf(s.Bytes())
	regions.mu.Lock()
	regions.shares[addr] = &share{s: s, owner: g, notifyOff: off, notifyPort: port}
	regions.mu.Unlock()
	addRegion(s.Bytes())
	*start = C.uintptr_t(addr)
	return 0
}

// shiGntshrUnshare withdraws a share. As with gntalloc, the caller is done
// with the pages at once, the notification fires now, and the grants end
// once the grantee has unmapped them (the pages stay mapped here until
// then, unused).
//
//export shiGntshrUnshare
func shiGntshrUnshare(id C.int, start unsafe.Pointer, count C.uint32_t) C.int {
	g, ok := gntshrs.get(id)
	if !ok {
		return ebadf
	}
	addr := uintptr(start)
	regions.mu.Lock()
	sh := regions.shares[addr]
	if sh == nil || sh.owner != g || len(sh.s.Bytes()) != int(count)*abi.PAGE_SIZE {
		regions.mu.Unlock()
		return -C.int(syscall.EINVAL)
	}
	delete(regions.shares, addr)
	regions.mu.Unlock()
	return errno(unshareRegion(addr, sh))
}

// unshareRegion withdraws a share the program is done with.
func unshareRegion(addr uintptr, sh *share) error {
	removeRegion(addr)
	if sh.notifyOff != gnttab.NoNotify {
		sh.s.Bytes()[sh.notifyOff] = 0
	}
	if sh.notifyPort != gnttab.NoNotify {
		notifyLocal(sh.notifyPort) // releases the cleared byte first
	}
	err := sh.owner.h.Unshare(sh.s)
	if errors.Is(err, gnttab.ErrBusy) {
		unshareLater(sh.owner.h, sh.s)
		return nil
	}
	return err
}

// shiMunmapRegions is munmap of [start, start+length), which covers whole
// mappings and shares of the library (xen.c checked): as with Linux's
// gntdev and gntalloc, that ends them, notifications included. Their
// memory is unmapped on the way.
//
//export shiMunmapRegions
func shiMunmapRegions(start C.uintptr_t, length C.size_t) C.int {
	lo, hi := uintptr(start), uintptr(start)+uintptr(length)
	inside := func(a uintptr, n int) bool { return a >= lo && a+uintptr(n) <= hi }
	regions.mu.Lock()
	var ms []uintptr
	var ss []uintptr
	for a, m := range regions.maps {
		if inside(a, len(m.mp.Bytes())) {
			ms = append(ms, a)
		}
	}
	for a, s := range regions.shares {
		if inside(a, len(s.s.Bytes())) {
			ss = append(ss, a)
		}
	}
	found := make(map[uintptr]any, len(ms)+len(ss))
	for _, a := range ms {
		found[a] = regions.maps[a]
		delete(regions.maps, a)
	}
	for _, a := range ss {
		found[a] = regions.shares[a]
		delete(regions.shares, a)
	}
	regions.mu.Unlock()
	var errs []error
	for a, r := range found {
		switch r := r.(type) {
		case *mapped:
			errs = append(errs, unmapRegion(a, r))
		case *share:
			errs = append(errs, unshareRegion(a, r))
		}
	}
	return errno(errors.Join(errs...))
}

// Shares still mapped by their grantee when unshared, retried until the
// grantee lets go.
var later struct {
	mu      sync.Mutex
	pending []pendingUnshare
	running bool
}

type pendingUnshare struct {
	h *gnttab.Handle
	s *gnttab.Share
}

func unshareLater(h *gnttab.Handle, s *gnttab.Share) {
	later.mu.Lock()
	defer later.mu.Unlock()
	later.pending = append(later.pending, pendingUnshare{h, s})
	if !later.running {
		later.running = true
		go retryUnshares()
	}
}

func retryUnshares() {
	wait := 10 * time.Millisecond
	for {
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
		later.mu.Lock()
		ps := later.pending
		later.pending = nil
		later.mu.Unlock()
		var keep []pendingUnshare
		for _, p := range ps {
			if err := p.h.Unshare(p.s); errors.Is(err, gnttab.ErrBusy) {
				keep = append(keep, p)
			}
		}
		later.mu.Lock()
		later.pending = append(later.pending, keep...)
		if len(later.pending) == 0 {
			later.running = false
			later.mu.Unlock()
			return
		}
		later.mu.Unlock()
	}
}
