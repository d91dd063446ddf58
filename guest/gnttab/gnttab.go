// Package gnttab is grant tables for a shi domain, with Xen's semantics
// (spec/xen-abi.md §3) and the shape of libxengnttab/libxengntshr.
//
// Granting: a domain shares pages it made (each page its own sealed
// memfd, registered with the agent under a frame number) and writes v1
// grant entries for them into its own grant table, which it shares with
// its agent. The agent reads an entry only when someone maps or copies
// through it. EndAccess is the domain's own compare-and-swap of the
// entry's flags, and fails with ErrBusy while the grantee has it mapped
// (the agent keeps GTF_reading/GTF_writing set meanwhile). Once the last
// grant of a page that a mapper received has ended, the page is swapped
// for a copy at the same address, since the mapper may have kept its
// descriptor.
//
// Mapping: Map asks the agent, which checks the granter's entry and hands
// over the page itself: on one host a mapped grant is the same physical
// page, never a window on the rest of the granter's memory. A read-only
// grant is passed as a read-only descriptor and mapped read-only.
//
// A grant of a domain of another host is mapped as a replica (guest/link):
// the granter's library sends the page's content over the link between
// the two domains, and the memory model of DESIGN.md §3 keeps both copies
// coherent at each event (release before a send, acquire on entry into
// evtchn). A read-only map is mapped read-only there too. The last unmap
// releases this domain's final writes and fences them, and the granter
// can end access only once they are applied.
//
// Copy moves bytes through a grant without mapping it; the agent checks
// the grant like a map, and reaches across hosts itself.
package gnttab

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/hv"
	"shi/guest/link"
	"shi/internal/abi"
	"shi/internal/grantentry"
	"shi/internal/hypercall"
	"shi/internal/shm"
)

type (
	// Ref is a grant reference.
	Ref = abi.GrantRef
	// DomID is a domain id.
	DomID = abi.DomID
	// Port is an event-channel port, for unmap notifications.
	Port = abi.EvtchnPort
)

// DOMID_SELF names the calling domain.
const DOMID_SELF = abi.DOMID_SELF

var (
	// ErrBusy means a grant is still mapped by its grantee.
	ErrBusy = grantentry.ErrBusy
	// ErrNotGranted means ending access to a ref that grants nothing.
	ErrNotGranted = grantentry.ErrNotGranted
	// ErrNoRefs means every entry of the grant table is in use.
	ErrNoRefs = fmt.Errorf("gnttab: grant table full: %w", syscall.ENOSPC)
	// ErrRevoked means the granter of a mapping is gone.
	ErrRevoked = errors.New("gnttab: grant revoked")
)

// StatusError is a grant operation the agent refused, with Xen's status.
type StatusError struct {
	Op     string
	Status int16 // GNTST_*
	Errno  syscall.Errno
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("gnttab: %s: %s", e.Op, abi.GNTSTString(e.Status))
}

// Unwrap lets errors.Is(err, syscall.EPERM) and the like work.
func (e *StatusError) Unwrap() error { return e.Errno }

// NoNotify disables an unmap notification's byte or event.
const NoNotify = hypercall.NoNotify

// domState is what all handles of one domain share.
type domState struct {
	c     *hv.Conn
	ln    *link.State
	table []byte

	// mu guards the fields below.
	mu     sync.Mutex
	free   []Ref                        // unused refs
	maps   map[abi.GrantHandle]*Mapping // live mappings, by agent handle
	frames map[uint32]frameAt           // this domain's shared pages, by frame
}

// frameAt is where a frame lives in this domain: page i of p.
type frameAt struct {
	p *Pages
	i int
}

type domStateKey struct{}

func state(c *hv.Conn) *domState {
	ln := link.For(c) // outside: Value's makers may not call Value
	return c.Value(domStateKey{}, func() any {
		d := &domState{c: c, ln: ln, table: c.GrantTable(), maps: map[abi.GrantHandle]*Mapping{}, frames: map[uint32]frameAt{}}
		for r := grantentry.Entries(d.table) - 1; r >= abi.GNTTAB_NR_RESERVED_ENTRIES; r-- {
			d.free = append(d.free, Ref(r))
		}
		c.Handle(hypercall.NotifyGnttabRevoke, d.revoked)
		c.Handle(hypercall.NotifyGnttabRemoteMap, d.remoteMap)
		c.Handle(hypercall.NotifyGnttabRemoteUnmap, d.remoteUnmap)
		return d
	}).(*domState)
}

func (d *domState) allocRef() (Ref, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.free)
	if n == 0 {
		return 0, ErrNoRefs
	}
	r := d.free[n-1]
	d.free = d.free[:n-1]
	return r, nil
}

func (d *domState) freeRef(r Ref) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = append(d.free, r)
}

// revoked marks a mapping whose granter died; a replica of another
// host's grant gets the granter's notification byte (Arg[0]) cleared.
func (d *domState) revoked(m hypercall.Msg, fds []int) {
	closeFDs(fds)
	d.mu.Lock()
	mp := d.maps[abi.GrantHandle(m.Handle)]
	if mp != nil {
		mp.revoked.Add(1)
		delete(d.maps, abi.GrantHandle(m.Handle))
	}
	d.mu.Unlock()
	if mp != nil && mp.remote {
		d.ln.Revoke(DomID(m.Dom), Ref(m.Ref), m.Arg[0])
	}
}

// remoteMap shares one of this domain's frames with a domain of another
// host that mapped a grant of it: the link sends the page and keeps it
// coherent.
func (d *domState) remoteMap(m hypercall.Msg, fds []int) {
	closeFDs(fds)
	d.mu.Lock()
	at, ok := d.frames[m.Frame]
	d.mu.Unlock()
	if !ok {
		// Not a page this library made: the mapper's map times out.
		fmt.Fprintf(os.Stderr, "gnttab: dom%d mapped ref %d of frame %d, which this library does not know\n", m.Dom, m.Ref, m.Frame)
		return
	}
	page := at.p.Bytes()[at.i*abi.PAGE_SIZE : (at.i+1)*abi.PAGE_SIZE]
	if err := d.ln.Share(DomID(m.Dom), Ref(m.Ref), m.Arg[0], page, m.Flags&abi.GNTMAP_readonly != 0); err != nil {
		fmt.Fprintf(os.Stderr, "gnttab: %v\n", err)
	}
}

// remoteUnmap stops sharing with a mapper of another host that died.
func (d *domState) remoteUnmap(m hypercall.Msg, fds []int) {
	closeFDs(fds)
	d.ln.Unshare(DomID(m.Dom), Ref(m.Ref), m.Arg[0])
}

// Handle grants, maps and copies for one domain. Handles of one domain
// share its grant table.
type Handle struct {
	c *hv.Conn
	d *domState
}

// Open returns a handle of the domain behind c.
func Open(c *hv.Conn) *Handle { return &Handle{c: c, d: state(c)} }

// OpenSelf opens a handle of this process's domain.
func OpenSelf() (*Handle, error) {
	c, err := hv.Self()
	if err != nil {
		return nil, err
	}
	return Open(c), nil
}

// DomID is the id of the handle's domain.
func (h *Handle) DomID() DomID { return h.c.DomID() }

// Entry reads one entry of this domain's grant table, e.g. to see the
// GTF_reading/GTF_writing bits the agent sets while it is mapped.
func (h *Handle) Entry(r Ref) abi.GrantEntryV1 {
	if !grantentry.InRange(h.d.table, r) {
		return abi.GrantEntryV1{}
	}
	return grantentry.Read(h.d.table, r)
}

// GrantAccess writes a new entry granting dom access to the domain's
// frame (one of its shared pages) and returns its ref.
func (h *Handle) GrantAccess(dom DomID, frame uint32, readonly bool) (Ref, error) {
	r, err := h.d.allocRef()
	if err != nil {
		return 0, err
	}
	if err := grantentry.GrantAccess(h.d.table, r, dom, frame, readonly); err != nil {
		// The entry is not ours to reuse: someone wrote it by hand.
		return 0, err
	}
	return r, nil
}

// EndAccess revokes grant r; it fails with ErrBusy while the grantee has
// it mapped. On success r is free for reuse, and if the grant was ever
// mapped, its page is replaced by a copy at the same address (see
// refresh).
func (h *Handle) EndAccess(r Ref) error {
	if !grantentry.InRange(h.d.table, r) {
		return grantentry.ErrRef
	}
	frame := grantentry.Read(h.d.table, r).Frame // r may be reused once ended
	// A mapper of another host that unmapped has fenced its writes on
	// their link: apply them, and the agent unpins the grant.
	h.d.ln.Acquire()
	flags, err := h.endAccess(r)
	if err != nil || flags&abi.GTF_shi_mapped == 0 {
		return err
	}
	return h.refresh(frame)
}

// endAccess ends r and returns the flags it cleared.
func (h *Handle) endAccess(r Ref) (uint16, error) {
	flags, err := grantentry.End(h.d.table, r)
	if err != nil {
		return 0, err
	}
	if r >= abi.GNTTAB_NR_RESERVED_ENTRIES { // the toolstack's, never handed out
		h.d.freeRef(r)
	}
	return flags, nil
}

// refresh gives frame a new page holding the same bytes; EndAccess calls
// it for a grant the agent marked GTF_shi_mapped. In Xen an ended grant
// leaves the grantee nothing; here the grantee received the page as a
// memfd, which it may have kept past unmapping, so the memory behind the
// frame has to change instead. While another grant of the frame is
// mapped the frame is still shared and stays as it is (that grant's end
// refreshes it).
//
// Writes this domain makes to the page while refresh runs may be lost:
// end access to a page before writing to it again.
func (h *Handle) refresh(frame uint32) error {
	h.d.mu.Lock()
	at, ok := h.d.frames[frame]
	h.d.mu.Unlock()
	if !ok {
		return nil // not a page this library made
	}
	page := at.p.Bytes()[at.i*abi.PAGE_SIZE : (at.i+1)*abi.PAGE_SIZE]
	mfd, err := shm.NewMemfd("shi-page", abi.PAGE_SIZE)
	if err != nil {
		return err
	}
	defer mfd.Close()
	if _, err := unix.Pwrite(mfd.Fd(), page, 0); err != nil {
		return fmt.Errorf("gnttab: refresh frame %d: %w", frame, err)
	}
	m, _, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabRefreshPage, Frame: frame}, mfd.Fd())
	if errors.Is(err, syscall.EBUSY) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gnttab: refresh frame %d: %w", frame, err)
	}
	if m.Flags&hypercall.FlagReplaced == 0 {
		return nil
	}
	return shm.RemapPage(page, mfd.Fd(), true)
}

// Pages are pages this domain made and shared with its agent, mapped side
// by side.
type Pages struct {
	Frames []uint32 // frame numbers, as grants name them
	m      *shm.Mapping
}

// Bytes is the pages' memory.
func (p *Pages) Bytes() []byte { return p.m.Bytes() }

// AllocPages makes n zeroed pages, each its own sealed memfd, and
// registers them with the agent. A page may carry an unmap notification
// (notifyOff/notifyPort, or NoNotify), fired by the agent if the domain
// dies: xengntshr_share_page_notify.
func (h *Handle) AllocPages(n int, notifyOff, notifyPort uint32) (*Pages, error) {
	if n <= 0 {
		return nil, fmt.Errorf("gnttab: alloc %d pages: %w", n, syscall.EINVAL)
	}
	p := &Pages{}
	var fds []int
	defer func() { closeFDs(fds) }()
	for i := range n {
		mfd, err := shm.NewMemfd("shi-page", abi.PAGE_SIZE)
		if err != nil {
			h.releaseFrames(p.Frames)
			return nil, err
		}
		fds = append(fds, mfd.Fd())
		no, np := uint32(NoNotify), uint32(NoNotify)
		if i == 0 {
			no, np = notifyOff, notifyPort
		}
		r, _, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabSharePage, Arg: [4]uint32{no, np}}, mfd.Fd())
		if err != nil {
			h.releaseFrames(p.Frames)
			return nil, fmt.Errorf("gnttab: share page: %w", err)
		}
		p.Frames = append(p.Frames, r.Frame)
	}
	m, err := shm.MapPages(fds, true)
	if err != nil {
		h.releaseFrames(p.Frames)
		return nil, err
	}
	p.m = m
	h.d.mu.Lock()
	for i, f := range p.Frames {
		h.d.frames[f] = frameAt{p, i}
	}
	h.d.mu.Unlock()
	return p, nil
}

func (h *Handle) releaseFrames(frames []uint32) error {
	var errs []error
	for _, f := range frames {
		if _, _, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabUnsharePage, Frame: f}); err != nil {
			errs = append(errs, fmt.Errorf("gnttab: unshare frame %d: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// FreePages withdraws pages from the agent and unmaps them. It fails with
// EBUSY while a grant of one of them is mapped.
func (h *Handle) FreePages(p *Pages) error {
	if err := h.releaseFrames(p.Frames); err != nil {
		return err
	}
	h.d.ln.Forget(p.Bytes())
	h.d.mu.Lock()
	for _, f := range p.Frames {
		delete(h.d.frames, f)
	}
	h.d.mu.Unlock()
	return p.m.Unmap()
}

// Share is pages granted to one domain (xengntshr_share_pages).
type Share struct {
	Refs  []Ref
	Pages *Pages
	ended []bool
}

// Bytes is the shared memory.
func (s *Share) Bytes() []byte { return s.Pages.Bytes() }

// SharePages makes count pages and grants each to dom.
func (h *Handle) SharePages(dom DomID, count int, writable bool) (*Share, error) {
	return h.SharePagesNotify(dom, count, writable, NoNotify, NoNotify)
}

// SharePagesNotify is SharePages with an unmap notification on the first
// page, fired if this domain dies (xengntshr_share_page_notify).
func (h *Handle) SharePagesNotify(dom DomID, count int, writable bool, notifyOff, notifyPort uint32) (*Share, error) {
	p, err := h.AllocPages(count, notifyOff, notifyPort)
	if err != nil {
		return nil, err
	}
	s := &Share{Pages: p}
	for _, f := range p.Frames {
		r, err := h.GrantAccess(dom, f, !writable)
		if err != nil {
			h.Unshare(s)
			return nil, err
		}
		s.Refs = append(s.Refs, r)
		s.ended = append(s.ended, false)
	}
	return s, nil
}

// Unshare ends access to every grant of s and frees its pages. While the
// grantee still maps one, it fails with ErrBusy and may be called again.
func (h *Handle) Unshare(s *Share) error {
	h.d.ln.Acquire() // fences of mappers of other hosts (see EndAccess)
	busy := false
	for i, r := range s.Refs {
		if s.ended[i] {
			continue
		}
		// No refresh: the pages are freed below. Ended already (by
		// EndAccess on the ref) counts as ended.
		if _, err := h.endAccess(r); err != nil && !errors.Is(err, ErrNotGranted) {
			busy = true
			continue
		}
		s.ended[i] = true
	}
	if busy {
		return ErrBusy
	}
	return h.FreePages(s.Pages)
}

// Mapping is grants of another domain mapped into this one.
type Mapping struct {
	m        *shm.Mapping
	handles  []abi.GrantHandle
	reps     []*link.Replica // per page: the replica of another host's grant, or nil
	remote   bool            // some page is a replica
	writable bool
	notify   [2]uint32 // offset, port
	revoked  atomic.Int32
}

// Bytes is the mapped memory: the granter's pages themselves.
func (m *Mapping) Bytes() []byte { return m.m.Bytes() }

// Revoked reports whether the granter has gone. The memory stays mapped
// (as a dying Xen domain's pages stay until unmapped) but is no longer
// shared with anyone; Unmap it.
func (m *Mapping) Revoked() bool { return m.revoked.Load() > 0 }

// ReplicaTimeout bounds how long a map of another host's grant waits for
// the page's content from the granter.
var ReplicaTimeout = 10 * time.Second

// Map maps dom's grants refs side by side (xengnttab_map_domain_grant_refs).
func (h *Handle) Map(dom DomID, refs []Ref, writable bool) (*Mapping, error) {
	return h.mapRefs(dom, refs, writable, NoNotify, NoNotify)
}

// MapNotify maps one grant with an unmap notification: when the mapping
// goes (Unmap, or this domain's death) the byte at notifyOff is cleared
// and notifyPort, a local port, is sent on (xengnttab_map_grant_ref_notify).
func (h *Handle) MapNotify(dom DomID, ref Ref, writable bool, notifyOff, notifyPort uint32) (*Mapping, error) {
	if notifyOff != NoNotify && (!writable || notifyOff >= abi.PAGE_SIZE) {
		return nil, fmt.Errorf("gnttab: notify offset %d: %w", notifyOff, syscall.EINVAL)
	}
	return h.mapRefs(dom, []Ref{ref}, writable, notifyOff, notifyPort)
}

func (h *Handle) mapRefs(dom DomID, refs []Ref, writable bool, notifyOff, notifyPort uint32) (*Mapping, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("gnttab: map no grants: %w", syscall.EINVAL)
	}
	var flags uint16
	if !writable {
		flags = abi.GNTMAP_readonly
	}
	mp := &Mapping{writable: writable, notify: [2]uint32{notifyOff, notifyPort}}
	var fds []int
	defer func() { closeFDs(fds) }()
	fail := func(err error) (*Mapping, error) {
		h.unmapHandles(mp.handles)
		for _, rep := range mp.reps {
			if rep != nil {
				h.d.ln.Unmap(rep, NoNotify)
			}
		}
		return nil, err
	}
	for _, ref := range refs {
		pend, err := h.d.ln.Prepare(dom, ref, writable)
		if err != nil {
			return fail(err)
		}
		r, got, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabMap, Dom: uint16(dom), Ref: uint32(ref),
			Flags: flags, Arg: [4]uint32{notifyOff, notifyPort, pend.Gen()}})
		remote := err == nil && r.Flags&hypercall.FlagRemote != 0
		if err != nil || (len(got) != 1 && !remote) {
			closeFDs(got)
			pend.Cancel()
			if err == nil {
				err = fmt.Errorf("gnttab: map: no page from the agent: %w", syscall.EIO)
			}
			return fail(mapError("map", r, err))
		}
		mp.handles = append(mp.handles, abi.GrantHandle(r.Handle))
		if !remote {
			pend.Cancel()
			fds = append(fds, got[0])
			mp.reps = append(mp.reps, nil)
			continue
		}
		closeFDs(got)
		rep, err := pend.Replica(ReplicaTimeout)
		if err != nil {
			pend.Cancel()
			return fail(fmt.Errorf("gnttab: map of dom%d ref %d: %w", dom, ref, err))
		}
		fd, err := unix.FcntlInt(uintptr(rep.Fd()), unix.F_DUPFD_CLOEXEC, 0)
		mp.reps = append(mp.reps, rep)
		if err != nil {
			return fail(err)
		}
		fds = append(fds, fd)
		mp.remote = true
	}
	m, err := shm.MapPages(fds, writable)
	if err != nil {
		return fail(err)
	}
	mp.m = m
	for i, rep := range mp.reps {
		if rep != nil {
			h.d.ln.Attach(rep, m.Bytes()[i*abi.PAGE_SIZE:])
		}
	}
	h.d.mu.Lock()
	for _, hd := range mp.handles {
		h.d.maps[hd] = mp
	}
	h.d.mu.Unlock()
	return mp, nil
}

func mapError(op string, r hypercall.Msg, err error) error {
	var e syscall.Errno
	if r.Status != 0 && errors.As(err, &e) {
		return &StatusError{Op: op, Status: r.Status, Errno: e}
	}
	return fmt.Errorf("gnttab: %s: %w", op, err)
}

// unmapHandles tells the agent that these mappings are gone.
func (h *Handle) unmapHandles(hs []abi.GrantHandle) error {
	var errs []error
	for _, hd := range hs {
		h.d.mu.Lock()
		delete(h.d.maps, hd)
		h.d.mu.Unlock()
		if r, _, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabUnmap, Handle: uint32(hd)}); err != nil {
			errs = append(errs, mapError("unmap", r, err))
		}
	}
	return errors.Join(errs...)
}

// Unmap fires the mapping's notification (if any), unmaps it and tells
// the agent, which clears the granter's GTF_reading/GTF_writing.
func (h *Handle) Unmap(mp *Mapping) error {
	if mp.m == nil {
		return nil
	}
	off := mp.notify[0]
	if off != NoNotify && mp.writable && !mp.Revoked() {
		mp.m.Bytes()[off] = 0
	}
	if err := mp.m.Unmap(); err != nil {
		return err
	}
	// A replica's last unmap releases this domain's writes (the
	// notification byte among them) and fences them, before the event.
	for i, rep := range mp.reps {
		if rep != nil {
			o := uint32(NoNotify)
			if i == 0 && !mp.Revoked() {
				o = off
			}
			h.d.ln.Unmap(rep, o)
		}
	}
	if port := mp.notify[1]; port != NoNotify && !mp.Revoked() {
		if ok, _ := h.d.ln.Notify(Port(port)); !ok {
			h.c.Call(hypercall.Msg{Op: hypercall.OpEvtchnSend, Port: port})
		}
	}
	// Revoked handles too: the agent keeps them (as Xen keeps a dead
	// granter's page mapped) until they are unmapped.
	return h.unmapHandles(mp.handles)
}

// Copy direction helpers build one gnttab_copy whose local side is the
// bytes carried in the message.

// CopyFrom copies len(dst) bytes from dom's grant ref at off into dst. The
// grant must be for this domain; it may be read-only.
func (h *Handle) CopyFrom(dst []byte, dom DomID, ref Ref, off uint16) error {
	op := abi.GnttabCopy{
		Source: abi.GnttabCopyPtr{U: uint64(ref), Domid: dom, Offset: off},
		Dest:   abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: DOMID_SELF},
		Len:    uint16(len(dst)), Flags: abi.GNTCOPY_source_gref,
	}
	if len(dst) > abi.PAGE_SIZE {
		return fmt.Errorf("gnttab: copy %d bytes: %w", len(dst), syscall.EINVAL)
	}
	r, err := h.Copy(op, nil)
	if err != nil {
		return err
	}
	if len(r) != len(dst) {
		return fmt.Errorf("gnttab: copy: agent returned %d bytes: %w", len(r), syscall.EIO)
	}
	copy(dst, r)
	return nil
}

// CopyTo copies src into dom's grant ref at off. The grant must be for
// this domain and writable.
func (h *Handle) CopyTo(dom DomID, ref Ref, off uint16, src []byte) error {
	if len(src) > abi.PAGE_SIZE {
		return fmt.Errorf("gnttab: copy %d bytes: %w", len(src), syscall.EINVAL)
	}
	op := abi.GnttabCopy{
		Source: abi.GnttabCopyPtr{U: hypercall.InlineFrame, Domid: DOMID_SELF},
		Dest:   abi.GnttabCopyPtr{U: uint64(ref), Domid: dom, Offset: off},
		Len:    uint16(len(src)), Flags: abi.GNTCOPY_dest_gref,
	}
	_, err := h.Copy(op, src)
	return err
}

// Copy runs one gnttab_copy as Xen defines it. A side without its gref
// flag names one of this domain's frames, or, with U ==
// hypercall.InlineFrame, the bytes src (source) or the returned bytes
// (destination).
func (h *Handle) Copy(op abi.GnttabCopy, src []byte) ([]byte, error) {
	data := make([]byte, abi.GnttabCopySize, abi.GnttabCopySize+len(src))
	op.Encode(data)
	data = append(data, src...)
	r, fds, err := h.c.Call(hypercall.Msg{Op: hypercall.OpGnttabCopy, Data: data})
	closeFDs(fds)
	if err != nil {
		return nil, mapError("copy", r, err)
	}
	return r.Data, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
