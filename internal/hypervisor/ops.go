package hypervisor

import (
	"errors"
	"fmt"
	"syscall"

	"shi/internal/abi"
	"shi/internal/evtchn"
	"shi/internal/gnttab"
	"shi/internal/hypercall"
	"shi/internal/shm"
	"shi/internal/transport"
)

// reply is a reply being built, with the descriptors it will own.
type reply struct {
	m   hypercall.Msg
	fds []int
}

func (r *reply) attach(fd int) error {
	dup, err := dupFD(fd)
	if err != nil {
		return errorf(syscall.EMFILE, "dup: %v", err)
	}
	r.fds = append(r.fds, dup)
	return nil
}

// handle runs one request of d and queues its reply.
func (h *Hypervisor) handle(d *vdom, m hypercall.Msg, fds []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.doms[d.id] != d {
		closeFDs(fds)
		return
	}
	r := &reply{m: hypercall.Msg{ID: m.ID, Op: m.Op}}
	var err error
	switch m.Op {
	case hypercall.OpHello:
		r.m.Dom = uint16(d.id)
		r.m.Frame = uint32(d.cfg.GrantFrames)
		r.m.Arg = [4]uint32{uint32(d.cfg.MaxPages), uint32(d.cfg.MaxPorts), uint32(d.cfg.MaxMaps)}
		err = r.attach(d.table.Fd())
	case hypercall.OpEvtchnAllocUnbound:
		var p evtchn.Port
		var acts []evtchn.Action
		p, acts, err = h.evt.AllocUnbound(d.id, abi.DOMID_SELF, DomID(m.Dom))
		r.m.Port = uint32(p)
		h.do(d, acts, r)
	case hypercall.OpEvtchnBindInterdomain:
		var p evtchn.Port
		var acts []evtchn.Action
		p, acts, err = h.evt.BindInterdomain(d.id, DomID(m.Dom), evtchn.Port(m.Port))
		var rde *evtchn.RemoteDomainError
		if errors.As(err, &rde) {
			err = h.bindRemote(d, m, rde)
			break
		}
		r.m.Port = uint32(p)
		h.do(d, acts, r)
	case hypercall.OpEvtchnBindIPI:
		var p evtchn.Port
		var acts []evtchn.Action
		p, acts, err = h.evt.BindIPI(d.id, 0)
		r.m.Port = uint32(p)
		h.do(d, acts, r)
	case hypercall.OpEvtchnSend:
		var acts []evtchn.Action
		acts, err = h.evt.Send(d.id, evtchn.Port(m.Port))
		h.do(d, acts, r)
	case hypercall.OpEvtchnClose:
		var acts []evtchn.Action
		acts, err = h.evt.Close(d.id, evtchn.Port(m.Port))
		h.do(d, acts, r)
	case hypercall.OpEvtchnStatus:
		var st abi.EvtchnStatus
		st, err = h.evt.Status(d.id, DomID(m.Dom), evtchn.Port(m.Port))
		if host, ok := h.remoteHost(DomID(m.Dom)); ok && errors.Is(err, syscall.ESRCH) {
			if !d.cfg.Privileged {
				err = errorf(syscall.EPERM, "dom%d may not ask about dom%d's ports", d.id, m.Dom)
				break
			}
			err = h.statusRemote(d, m, r, host)
			break
		}
		if err == nil {
			r.m.Data = make([]byte, abi.EvtchnStatusSize)
			st.Encode(r.m.Data)
		}
	case hypercall.OpGnttabSharePage:
		err = h.sharePage(d, m, fds, r)
		fds = nil
	case hypercall.OpGnttabUnsharePage:
		err = h.unsharePage(d, m.Frame)
	case hypercall.OpGnttabRefreshPage:
		err = h.refreshPage(d, m.Frame, fds, r)
		fds = nil
	case hypercall.OpGnttabMap:
		err = h.mapGrant(d, m, r)
	case hypercall.OpGnttabUnmap:
		err = h.unmapGrant(d, m, r)
	case hypercall.OpGnttabCopy:
		err = h.copyGrant(d, m, r)
	case hypercall.OpGnttabRemoteUnpin:
		err = h.remoteUnpin(d, m)
	default:
		err = errorf(syscall.ENOSYS, "unknown operation %d", m.Op)
	}
	closeFDs(fds)
	if err == errDeferred {
		return // another host answers first
	}
	h.finish(d, m, r, err)
}

// do carries out event-channel actions in order. Descriptors for the
// caller go into its reply r (nil when there is none); other domains are
// notified.
// Preconditions: h.mu held.
func (h *Hypervisor) do(caller *vdom, acts []evtchn.Action, r *reply) {
	mine := func(dom DomID) bool { return caller != nil && dom == caller.id }
	for _, a := range acts {
		switch a := a.(type) {
		case evtchn.Open:
			d := h.doms[a.Dom]
			if d == nil {
				continue
			}
			ev, err := shm.NewEventFD()
			if err != nil {
				d.log.Error("hypervisor: cannot create a port's eventfd", "port", a.Port, "err", err)
				continue
			}
			d.ports[a.Port] = ev
			if mine(a.Dom) && r != nil {
				if err := r.attach(ev.Fd()); err != nil {
					d.log.Error("hypervisor: cannot pass a port's eventfd", "port", a.Port, "err", err)
				}
			}
		case evtchn.Connect:
			d := h.doms[a.Dom]
			if d == nil {
				continue
			}
			var flags uint16
			var arg [4]uint32
			bell := -1
			if a.Peer.Host != evtchn.Local {
				// The library sends on the link to the peer's domain.
				flags, arg = hypercall.FlagRemote, [4]uint32{uint32(a.Peer.Dom), uint32(a.Peer.Port)}
			} else if p := h.doms[a.Peer.Dom]; p != nil && p.ports[a.Peer.Port] != nil {
				if fd, err := dupFD(p.ports[a.Peer.Port].Fd()); err == nil {
					bell = fd
				}
			}
			switch {
			// The reply carries the new port's peer; a bind to one of
			// the caller's own ports (loopback) notifies the other end.
			case mine(a.Dom) && r != nil && uint32(a.Port) == r.m.Port:
				r.m.Flags |= flags
				r.m.Arg = arg
				if bell >= 0 {
					r.fds = append(r.fds, bell)
				}
			case bell >= 0:
				d.notify(hypercall.Msg{Op: hypercall.NotifyEvtchnConnect, Port: uint32(a.Port), Flags: flags, Arg: arg}, bell)
			default:
				d.notify(hypercall.Msg{Op: hypercall.NotifyEvtchnConnect, Port: uint32(a.Port), Flags: flags, Arg: arg})
			}
		case evtchn.Kick:
			h.kick(a.Dom, a.Port)
		case evtchn.Disconnect:
			if d := h.doms[a.Dom]; d != nil {
				d.notify(hypercall.Msg{Op: hypercall.NotifyEvtchnDisconnect, Port: uint32(a.Port)})
				// A spurious event, so that a domain waiting on the port
				// wakes and sees it unbound; rings re-check anyway.
				h.kick(a.Dom, a.Port)
			}
		case evtchn.Release:
			d := h.doms[a.Dom]
			if d == nil {
				continue
			}
			if ev := d.ports[a.Port]; ev != nil {
				ev.Close()
				delete(d.ports, a.Port)
			}
			if !mine(a.Dom) {
				d.notify(hypercall.Msg{Op: hypercall.NotifyEvtchnRelease, Port: uint32(a.Port)})
			}
		case evtchn.Forward:
			kind := transport.KindSend
			if a.Msg.Op == evtchn.OpClose {
				kind = transport.KindClose
			}
			h.send(string(a.Host), &transport.Msg{Kind: kind, FromDom: uint16(a.Msg.From.Dom), FromPort: uint32(a.Msg.From.Port),
				ToDom: uint16(a.Msg.To.Dom), ToPort: uint32(a.Msg.To.Port)})
		}
	}
}

// kick makes dom:port pending.
// Preconditions: h.mu held.
func (h *Hypervisor) kick(dom DomID, port evtchn.Port) {
	if d := h.doms[dom]; d != nil {
		if ev := d.ports[port]; ev != nil {
			if err := ev.Signal(); err != nil {
				d.log.Error("hypervisor: kick failed", "port", port, "err", err)
			}
		}
	}
}

// sharePage registers a page the domain made: a sealed one-page memfd.
// Preconditions: h.mu held.
func (h *Hypervisor) sharePage(d *vdom, m hypercall.Msg, fds []int, r *reply) error {
	mfd, err := adoptPage("share page", fds)
	if err != nil {
		return err
	}
	if d.npages >= d.cfg.MaxPages {
		mfd.Close()
		return errorf(syscall.ENOSPC, "share page: all %d pages of its memory are shared", d.cfg.MaxPages)
	}
	gfn := -1
	for i, p := range d.pages {
		if p == nil {
			gfn = i
			break
		}
	}
	if gfn < 0 {
		gfn = len(d.pages)
		d.pages = append(d.pages, nil)
	}
	d.pages[gfn] = &page{mfd: mfd}
	d.npages++
	if n := (notify{m.Arg[0], m.Arg[1]}); !n.none() {
		d.shares[uint32(gfn)] = n
	}
	r.m.Frame = uint32(gfn)
	return nil
}

// adoptPage takes the one sealed one-page memfd a request of op carries;
// on error the descriptors are closed.
func adoptPage(op string, fds []int) (*shm.Memfd, error) {
	if len(fds) != 1 {
		closeFDs(fds)
		return nil, errorf(syscall.EINVAL, "%s: need one memfd, got %d descriptors", op, len(fds))
	}
	mfd, err := shm.AdoptMemfd(fds[0], abi.PAGE_SIZE)
	if err != nil {
		closeFDs(fds)
		return nil, errorf(syscall.EINVAL, "%s: %v", op, err)
	}
	return mfd, nil
}

// unsharePage withdraws one of d's pages, unless a grant of it is pinned.
// Preconditions: h.mu held.
func (h *Hypervisor) unsharePage(d *vdom, gfn uint32) error {
	if int64(gfn) >= int64(len(d.pages)) || d.pages[gfn] == nil {
		return errorf(syscall.EINVAL, "unshare: no page %d", gfn)
	}
	if h.gnt.FramePinned(d.id, gfn) {
		return errorf(syscall.EBUSY, "unshare: page %d is mapped", gfn)
	}
	d.pages[gfn].close()
	d.pages[gfn] = nil
	d.npages--
	delete(d.shares, gfn)
	return nil
}

// refreshPage replaces one of d's pages by the fresh copy it sends, if
// the old one was ever handed to a mapper: a mapper may have kept its
// descriptor after unmapping, and a memfd cannot be taken back.
// Preconditions: h.mu held.
func (h *Hypervisor) refreshPage(d *vdom, gfn uint32, fds []int, r *reply) error {
	mfd, err := adoptPage("refresh page", fds)
	if err != nil {
		return err
	}
	switch {
	case int64(gfn) >= int64(len(d.pages)) || d.pages[gfn] == nil:
		err = errorf(syscall.EINVAL, "refresh page: no page %d", gfn)
	case h.gnt.FramePinned(d.id, gfn):
		err = errorf(syscall.EBUSY, "refresh page: page %d is mapped", gfn)
	}
	if err != nil || !d.pages[gfn].exposed {
		mfd.Close()
		return err
	}
	d.pages[gfn].close()
	d.pages[gfn] = &page{mfd: mfd}
	r.m.Flags = hypercall.FlagReplaced
	return nil
}

// remoteHost reports whether dom is a domain of another host, and which.
// Preconditions: h.mu held.
func (h *Hypervisor) remoteHost(dom DomID) (string, bool) {
	if dom == abi.DOMID_SELF || h.doms[dom] != nil || h.locate == nil {
		return "", false
	}
	if at, ok := h.locate.Locate(dom); ok && at != evtchn.Local {
		return string(at), true
	}
	return "", false
}

// remoteGrant reports whether a copy side is a grant of another host's
// domain.
// Preconditions: h.mu held.
func (h *Hypervisor) remoteGrant(d *vdom, p gnttab.CopyPtr, gref bool) (string, bool) {
	if !gref {
		return "", false
	}
	return h.remoteHost(p.Dom)
}

// statusErrno maps a grant status to the errno of the reply.
func statusErrno(st gnttab.Status) syscall.Errno {
	switch st {
	case gnttab.Okay:
		return 0
	case gnttab.BadDomain:
		return syscall.ESRCH
	case gnttab.NoSpace:
		return syscall.ENOSPC
	case gnttab.GeneralError, gnttab.PermissionDenied:
		return syscall.EPERM
	}
	return syscall.EINVAL
}

type statusError struct {
	op string
	st gnttab.Status
}

func (e statusError) Error() string { return "hypervisor: " + e.op + ": " + e.st.String() }
func (e statusError) Unwrap() error { return statusErrno(e.st) }
func grantErr(op string, st gnttab.Status) error {
	if st == gnttab.Okay {
		return nil
	}
	return statusError{op, st}
}

// mapGrant maps (m.Dom, m.Ref) for d and passes it the page.
// Preconditions: h.mu held.
func (h *Hypervisor) mapGrant(d *vdom, m hypercall.Msg, r *reply) error {
	readonly := m.Flags&abi.GNTMAP_readonly != 0
	if host, ok := h.remoteHost(DomID(m.Dom)); ok {
		return h.mapRemote(d, m, r, host)
	}
	mp, st := h.gnt.Map(d.id, DomID(m.Dom), abi.GrantRef(m.Ref), readonly)
	r.m.Status = int16(st)
	if st != gnttab.Okay {
		ro := ""
		if readonly {
			ro = " read-only"
		}
		return grantErr(fmt.Sprintf("map%s of dom%d ref %d", ro, m.Dom, m.Ref), st)
	}
	g := h.doms[mp.Granter]
	pg := g.pages[mp.Frame] // pinned frames exist (gnttab checked through Frame)
	var fd int
	var err error
	if readonly {
		fd, err = pg.mfd.ReadOnlyFd()
	} else {
		fd, err = dupFD(pg.mfd.Fd())
	}
	if err != nil {
		h.gnt.Unmap(d.id, mp.Handle)
		r.m.Status = int16(gnttab.GeneralError)
		return errorf(syscall.EMFILE, "map: %v", err)
	}
	r.fds = append(r.fds, fd)
	pg.exposed = true
	r.m.Handle = uint32(mp.Handle)
	r.m.Frame = mp.Frame
	r.m.Dom = uint16(mp.Granter)
	r.m.Ref = m.Ref
	d.maps[mp.Handle] = notify{m.Arg[0], m.Arg[1]}
	return nil
}

// unmapGrant drops one of d's mappings. The guest library has already
// unmapped the page and fired its notification itself.
// Preconditions: h.mu held.
func (h *Hypervisor) unmapGrant(d *vdom, m hypercall.Msg, r *reply) error {
	// A map of another host's grant is unpinned there once the granter's
	// library has seen this mapper's fence on their link.
	_, st := h.gnt.Unmap(d.id, abi.GrantHandle(m.Handle))
	r.m.Status = int16(st)
	if st == gnttab.Okay {
		delete(d.maps, abi.GrantHandle(m.Handle))
		delete(d.granterOff, abi.GrantHandle(m.Handle))
	}
	return grantErr("unmap", st)
}

// copyGrant runs one gnttab_copy. A non-grant side whose U is
// hypercall.InlineFrame is the bytes carried by the request (source) or
// returned in the reply (destination).
// Preconditions: h.mu held.
func (h *Hypervisor) copyGrant(d *vdom, m hypercall.Msg, r *reply) error {
	c, err := abi.DecodeGnttabCopy(m.Data)
	if err != nil {
		return errorf(syscall.EINVAL, "copy: %v", err)
	}
	data := m.Data[abi.GnttabCopySize:]
	side := func(p abi.GnttabCopyPtr, gref bool) (gnttab.CopyPtr, bool, gnttab.Status) {
		cp := gnttab.CopyPtr{Dom: p.Domid, Offset: p.Offset}
		switch {
		case gref:
			cp.Ref = abi.GrantRef(p.U)
			if p.U>>32 != 0 {
				return cp, false, gnttab.BadGntref
			}
		case p.U == hypercall.InlineFrame:
			cp.Frame = inlineGFN
			return cp, true, gnttab.Okay
		case p.U >= uint64(inlineGFN):
			return cp, false, gnttab.BadPage
		default:
			cp.Frame = uint32(p.U)
		}
		return cp, false, gnttab.Okay
	}
	src, srcInline, st := side(c.Source, c.Flags&abi.GNTCOPY_source_gref != 0)
	if st != gnttab.Okay {
		r.m.Status = int16(st)
		return grantErr("copy", st)
	}
	dst, dstInline, st := side(c.Dest, c.Flags&abi.GNTCOPY_dest_gref != 0)
	if st != gnttab.Okay {
		r.m.Status = int16(st)
		return grantErr("copy", st)
	}
	if int(c.Source.Offset)+int(c.Len) > abi.PAGE_SIZE || int(c.Dest.Offset)+int(c.Len) > abi.PAGE_SIZE ||
		(srcInline && len(data) != int(c.Len)) || (!srcInline && len(data) != 0) {
		r.m.Status = int16(gnttab.BadCopyArg)
		return grantErr("copy", gnttab.BadCopyArg)
	}
	srcHost, srcRemote := h.remoteGrant(d, src, c.Flags&abi.GNTCOPY_source_gref != 0)
	dstHost, dstRemote := h.remoteGrant(d, dst, c.Flags&abi.GNTCOPY_dest_gref != 0)
	if srcRemote || dstRemote {
		side := func(p gnttab.CopyPtr, gref, inline bool, host string) copySide {
			dom := p.Dom
			if dom == abi.DOMID_SELF {
				dom = d.id
			}
			return copySide{grant: gref, dom: dom, ref: p.Ref, frame: p.Frame, inline: inline, host: host}
		}
		return h.copyRemote(d, m, r, c,
			side(src, c.Flags&abi.GNTCOPY_source_gref != 0, srcInline, srcHost),
			side(dst, c.Flags&abi.GNTCOPY_dest_gref != 0, dstInline, dstHost))
	}
	if srcInline || dstInline {
		h.inline = d.id
		defer func() { h.inline = abi.DOMID_INVALID }()
		clear(h.scratch)
		if srcInline {
			copy(h.scratch[c.Source.Offset:], data)
		}
	}
	st = h.gnt.Copy(d.id, gnttab.CopyOp{Source: src, Dest: dst, Len: c.Len, Flags: c.Flags})
	r.m.Status = int16(st)
	if st == gnttab.Okay && dstInline {
		r.m.Data = append([]byte(nil), h.scratch[c.Dest.Offset:int(c.Dest.Offset)+int(c.Len)]...)
	}
	return grantErr("copy", st)
}
