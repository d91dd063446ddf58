package hypervisor

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"shi/internal/abi"
	"shi/internal/evtchn"
	"shi/internal/gnttab"
	"shi/internal/hypercall"
	"shi/internal/ring"
	"shi/internal/transport"
)

// The cross-host half of the hypervisor: the peer protocol
// (internal/transport messages) between the hypervisors of two hosts.
//
//	KindBindReq   FromDom:FromPort (reserved by the binder) binds
//	              ToDom:ToPort; answered by KindBindResp (Errno)
//	KindSend      an event from FromDom:FromPort to ToDom:ToPort (the
//	              domains' own links carry events; this is the fallback)
//	KindClose     FromDom:FromPort closed: ToDom:ToPort goes unbound
//	KindMapReq    FromDom maps ToDom's Ref (Flags GNTMAP_readonly, Arg[0]
//	              generation, Arg[1] the mapper's notify byte); answered
//	              by KindMapResp (Status, Frame, Arg[0] the granter's
//	              notify byte for that frame)
//	KindUnmap     (unmapDead) FromDom, a mapper, died: drop its pins on
//	              ToDom's Ref up to generation Arg[0], clear its notify
//	              bytes
//	KindRevoke    FromDom, a granter, died: ToDom's maps of Ref are
//	              revoked (Arg[0]: the notify byte to clear in replicas)
//	KindCopyReq   FromDom copies through ToDom's Ref: Arg[0] offset,
//	              Arg[1] length, Flags copyWrite with Data; answered by
//	              KindCopyResp (Status, Data)
//	KindStatusReq FromDom (privileged on its host) asks the status of
//	              ToDom:ToPort; answered by KindStatusResp (Errno, Data
//	              = struct evtchn_status)
//	KindDomainGone FromDom is gone: forget everything tied to it (sent
//	              after its closes, revokes and unmaps, to every host it
//	              had a link with)
//
// A request that needs another host gets a deferred reply: the domain's
// request loop goes on meanwhile, and the reply is pushed when the answer
// comes, the host dies, or Config.Timeout passes. Nothing here blocks
// under Hypervisor.mu: Peers.Send only queues.

// Flags of peer messages.
const (
	unmapDead uint16 = 1 // KindUnmap: the mapper died
	copyWrite uint16 = 1 // KindCopyReq: write Data into the grant
)

// errDeferred is what an operation returns when its reply comes later.
var errDeferred = errors.New("hypervisor: reply deferred")

// pending is a domain's request that waits for another host.
type pending struct {
	host     string
	deadline time.Time
	// done finishes the request with the peer's answer, or with err when
	// the host died or time ran out (resp is nil then). It runs under
	// Hypervisor.mu; the domain may be gone by then.
	done func(resp *transport.Msg, err error)
}

// call sends a request to host and registers done for its answer.
// Preconditions: h.mu held.
func (h *Hypervisor) call(host string, m *transport.Msg, done func(*transport.Msg, error)) {
	h.nextID++
	m.ID = h.nextID
	if err := h.send(host, m); err != nil {
		done(nil, err)
		return
	}
	h.pending[m.ID] = &pending{host: host, deadline: time.Now().Add(h.timeout), done: done}
}

// send queues a message to host.
// Preconditions: h.mu held (Peers.Send does not block).
func (h *Hypervisor) send(host string, m *transport.Msg) error {
	if h.peers == nil {
		return fmt.Errorf("hypervisor: no data plane to host %q: %w", host, syscall.EHOSTUNREACH)
	}
	if err := h.peers.Send(host, m); err != nil {
		h.log.Warn("hypervisor: cannot reach another host", "host", host, "kind", m.Kind.String(), "err", err)
		return fmt.Errorf("hypervisor: host %q: %v: %w", host, err, syscall.EHOSTUNREACH)
	}
	return nil
}

// sweep fails the requests and links that waited too long.
func (h *Hypervisor) sweep() {
	t := time.NewTicker(h.timeout / 10)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.mu.Lock()
			for id, p := range h.pending {
				if now.After(p.deadline) {
					delete(h.pending, id)
					p.done(nil, fmt.Errorf("hypervisor: host %q did not answer in %v: %w", p.host, h.timeout, syscall.ETIMEDOUT))
				}
			}
			h.closeLinks(func(_ linkKey, l *link) bool { return !l.up && !l.dialing && now.Sub(l.since) > h.timeout })
			h.mu.Unlock()
		}
	}
}

// finish sends d the reply to request m, or err.
// Preconditions: h.mu held.
func (h *Hypervisor) finish(d *vdom, m hypercall.Msg, r *reply, err error) {
	if h.doms[d.id] != d {
		closeFDs(r.fds)
		return
	}
	if err != nil {
		r.m.Errno = uint32(errnoOf(err))
		h.refuseLocked(d, m, err)
		closeFDs(r.fds)
		r.fds = nil
	}
	if perr := d.out.push(r.m.Append(nil), r.fds); errors.Is(perr, errOverflow) {
		d.log.Warn("hypervisor: domain disconnected: it does not read its agent connection")
		d.conn.Close()
	}
}

// Inbound applies a message from the hypervisor of host from. It is the
// only way traffic from other hosts enters; messages from one host come
// in the order that host sent them. m.Data is only valid during the call.
func (h *Hypervisor) Inbound(from string, m transport.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	switch m.Kind {
	case transport.KindBindResp, transport.KindMapResp, transport.KindCopyResp, transport.KindStatusResp:
		p := h.pending[m.ID]
		if p == nil || p.host != from {
			return // it timed out, or the host died and came back
		}
		delete(h.pending, m.ID)
		p.done(&m, nil)
	case transport.KindBindReq:
		h.acceptBind(from, m)
	case transport.KindSend, transport.KindClose:
		op := evtchn.OpSend
		if m.Kind == transport.KindClose {
			op = evtchn.OpClose
		}
		h.do(nil, h.evt.Deliver(evtchn.Host(from), evtchn.Message{Op: op,
			To:   evtchn.Endpoint{Dom: DomID(m.ToDom), Port: evtchn.Port(m.ToPort)},
			From: evtchn.Endpoint{Dom: DomID(m.FromDom), Port: evtchn.Port(m.FromPort)}}), nil)
	case transport.KindMapReq:
		h.acceptMap(from, m)
	case transport.KindUnmap:
		if m.Flags&unmapDead != 0 {
			for _, p := range h.gnt.UnpinRemote(from, DomID(m.FromDom), DomID(m.ToDom), gnttab.Ref(m.Ref), m.Arg[0]) {
				h.pinGone(p, true)
			}
		}
	case transport.KindRevoke:
		for _, mp := range h.gnt.RevokeRemote(from, DomID(m.FromDom), gnttab.Ref(m.Ref)) {
			h.revokeMap(mp, m.Arg[0])
		}
	case transport.KindCopyReq:
		h.acceptCopy(from, m)
	case transport.KindStatusReq:
		resp := &transport.Msg{Kind: transport.KindStatusResp, ID: m.ID}
		st, err := h.evt.StatusOf(DomID(m.ToDom), evtchn.Port(m.ToPort))
		if err != nil {
			resp.Errno = uint32(errnoOf(err))
		} else {
			resp.Data = make([]byte, abi.EvtchnStatusSize)
			st.Encode(resp.Data)
		}
		h.send(from, resp)
	case transport.KindDomainGone:
		h.forget(from, DomID(m.FromDom), false)
	default:
		h.log.Warn("hypervisor: unknown message from another host", "host", from, "kind", m.Kind.String())
	}
}

// HostDown forgets a host that membership declared dead: ports bound to
// its domains go back to unbound (and are kicked), maps of its grants are
// revoked, its pins on ours are dropped (their notification bytes
// cleared), links to it are shut, and requests waiting for it fail.
func (h *Hypervisor) HostDown(host string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || host == "" || host == h.host {
		return
	}
	h.forget(host, 0, true)
	for id, p := range h.pending {
		if p.host == host {
			delete(h.pending, id)
			p.done(nil, fmt.Errorf("hypervisor: host %q is down: %w", host, syscall.EHOSTDOWN))
		}
	}
}

// DomainGone forgets a domain of another host that is no longer running
// (the directory says so): what its host would have told us had it been
// able to. It does nothing for a domain we had no dealings with.
func (h *Hypervisor) DomainGone(host string, dom DomID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || host == "" || host == h.host {
		return
	}
	h.forget(host, dom, false)
}

// forget drops what ties local domains to domain dom of host, or to every
// domain of host. Revocations go first, so that a library has cleared its
// notification bytes by the time the disconnect's kick makes it look.
// Preconditions: h.mu held.
func (h *Hypervisor) forget(host string, dom DomID, all bool) {
	var maps []gnttab.Mapping
	var pins []gnttab.RemotePin
	var acts []evtchn.Action
	if all {
		maps = h.gnt.DropGranterHost(host)
		pins = h.gnt.DropHostPins(host)
		acts = h.evt.DropHost(evtchn.Host(host))
	} else {
		maps = h.gnt.DropGranter(host, dom)
		pins = h.gnt.DropRemoteMapper(host, dom)
		acts = h.evt.DropDomain(evtchn.Host(host), dom)
	}
	for _, mp := range maps {
		h.revokeMap(mp, h.granterOff(mp))
	}
	for _, p := range pins {
		h.pinGone(p, true)
	}
	h.do(nil, acts, nil)
	h.closeLinks(func(k linkKey, l *link) bool { return l.host == host && (all || k.peer == dom) })
}

// granterOff is the granter's notification byte recorded for a map.
// Preconditions: h.mu held.
func (h *Hypervisor) granterOff(mp gnttab.Mapping) uint32 {
	if d := h.doms[mp.Mapper]; d != nil {
		if off, ok := d.granterOff[mp.Handle]; ok {
			return off
		}
	}
	return hypercall.NoNotify
}

// revokeMap tells a mapper that the granter (of another host) of one of
// its maps is gone; its library clears off in the replica.
// Preconditions: h.mu held; mp is gone from the table.
func (h *Hypervisor) revokeMap(mp gnttab.Mapping, off uint32) {
	d := h.doms[mp.Mapper]
	if d == nil {
		return
	}
	delete(d.maps, mp.Handle)
	delete(d.granterOff, mp.Handle)
	d.notify(hypercall.Msg{Op: hypercall.NotifyGnttabRevoke, Handle: uint32(mp.Handle), Dom: uint16(mp.Granter),
		Ref: uint32(mp.Ref), Arg: [4]uint32{off}})
}

// pinGone tells a granter that a mapper of another host no longer maps
// its grant; if the mapper died, its notification byte is cleared in the
// granter's page first, as the kernel does for a dying process.
// Preconditions: h.mu held.
func (h *Hypervisor) pinGone(p gnttab.RemotePin, dead bool) {
	if dead && p.NotifyOff < abi.PAGE_SIZE && !p.Readonly {
		if page := (*frames)(h).Frame(p.Granter, p.Frame); page != nil {
			ring.And8(page, int(p.NotifyOff), 0)
		}
	}
	if d := h.doms[p.Granter]; d != nil {
		d.notify(hypercall.Msg{Op: hypercall.NotifyGnttabRemoteUnmap, Ref: uint32(p.Ref), Dom: uint16(p.Mapper),
			Frame: p.Frame, Arg: [4]uint32{p.Gen}})
	}
}

// statusRemote asks another host the status of one of its domains'
// ports, for a privileged domain.
// Preconditions: h.mu held.
func (h *Hypervisor) statusRemote(d *vdom, m hypercall.Msg, r *reply, host string) error {
	h.call(host, &transport.Msg{Kind: transport.KindStatusReq, FromDom: uint16(d.id), ToDom: m.Dom, ToPort: m.Port},
		func(resp *transport.Msg, err error) {
			switch {
			case err != nil:
			case resp.Errno != 0:
				err = fmt.Errorf("hypervisor: status of dom%d port %d on host %q: %w", m.Dom, m.Port, host, syscall.Errno(resp.Errno))
			case len(resp.Data) != abi.EvtchnStatusSize:
				err = errorf(syscall.EIO, "status from host %q: %d bytes", host, len(resp.Data))
			default:
				r.m.Data = append([]byte(nil), resp.Data...)
			}
			h.finish(d, m, r, err)
		})
	return errDeferred
}

// bindRemote starts a bind of d to a port of a domain of another host:
// reserve the local port, make sure of the link, ask the peer's host,
// then complete or roll back.
// Preconditions: h.mu held.
func (h *Hypervisor) bindRemote(d *vdom, m hypercall.Msg, rde *evtchn.RemoteDomainError) error {
	if h.peers == nil {
		return errorf(syscall.ESRCH, "dom%d is on host %q and this agent has no data plane", rde.Dom, rde.Host)
	}
	port, err := h.evt.ReserveRemote(d.id, rde.Dom)
	if err != nil {
		return err
	}
	host := string(rde.Host)
	peer := evtchn.Endpoint{Host: rde.Host, Dom: rde.Dom, Port: evtchn.Port(m.Port)}
	r := &reply{m: hypercall.Msg{ID: m.ID, Op: m.Op}}
	fail := func(err error) {
		h.evt.AbortRemote(d.id, port)
		h.finish(d, m, r, err)
	}
	h.withLink(d, rde.Dom, host, func(err error) {
		if err != nil {
			fail(err)
			return
		}
		h.call(host, &transport.Msg{Kind: transport.KindBindReq, FromDom: uint16(d.id), FromPort: uint32(port),
			ToDom: uint16(peer.Dom), ToPort: uint32(peer.Port)}, func(resp *transport.Msg, err error) {
			if err == nil && resp.Errno != 0 {
				err = fmt.Errorf("hypervisor: dom%d port %d on host %q refused the bind: %w", peer.Dom, peer.Port, host, syscall.Errno(resp.Errno))
			}
			if err != nil {
				fail(err)
				return
			}
			acts, err := h.evt.CompleteRemote(d.id, port, peer)
			if err != nil {
				// d died meanwhile: unbind the peer again.
				h.send(host, &transport.Msg{Kind: transport.KindClose, FromDom: uint16(d.id), FromPort: uint32(port),
					ToDom: uint16(peer.Dom), ToPort: uint32(peer.Port)})
				h.finish(d, m, r, err)
				return
			}
			r.m.Port = uint32(port)
			h.do(d, acts, r)
			h.finish(d, m, r, nil)
		})
	})
	return errDeferred
}

// acceptBind is the peer's side of bindRemote.
// Preconditions: h.mu held.
func (h *Hypervisor) acceptBind(from string, m transport.Msg) {
	dom, binder := DomID(m.ToDom), DomID(m.FromDom)
	// The binder's host links the pair before it asks; the link may still
	// be on its way to the domain.
	h.whenLinked(dom, binder, from, func(err error) {
		resp := &transport.Msg{Kind: transport.KindBindResp, ID: m.ID}
		if err == nil {
			var acts []evtchn.Action
			acts, err = h.evt.AcceptRemoteBind(dom, evtchn.Port(m.ToPort),
				evtchn.Endpoint{Host: evtchn.Host(from), Dom: binder, Port: evtchn.Port(m.FromPort)})
			h.do(nil, acts, nil)
		}
		if err != nil {
			resp.Errno = uint32(errnoOf(err))
		}
		h.send(from, resp)
	})
}

// mapRemote starts a map by d of a grant of a domain of another host.
// Preconditions: h.mu held.
func (h *Hypervisor) mapRemote(d *vdom, m hypercall.Msg, r *reply, host string) error {
	readonly := m.Flags&abi.GNTMAP_readonly != 0
	granter := DomID(m.Dom)
	gen := m.Arg[2]
	if !h.gnt.HasRoom(d.id) {
		r.m.Status = int16(gnttab.NoSpace)
		return grantErr("map", gnttab.NoSpace)
	}
	notifyOff := m.Arg[0]
	if readonly || notifyOff >= abi.PAGE_SIZE {
		notifyOff = gnttab.NoNotify
	}
	fail := func(st gnttab.Status, err error) {
		r.m.Status = int16(st)
		h.finish(d, m, r, err)
	}
	h.withLink(d, granter, host, func(err error) {
		if err != nil {
			fail(gnttab.BadDomain, err)
			return
		}
		req := &transport.Msg{Kind: transport.KindMapReq, FromDom: uint16(d.id), ToDom: uint16(granter), Ref: m.Ref,
			Flags: m.Flags & abi.GNTMAP_readonly, Arg: [4]uint32{gen, notifyOff}}
		h.call(host, req, func(resp *transport.Msg, err error) {
			undo := func() {
				h.send(host, &transport.Msg{Kind: transport.KindUnmap, Flags: unmapDead, FromDom: uint16(d.id),
					ToDom: uint16(granter), Ref: m.Ref, Arg: [4]uint32{gen}})
			}
			if err != nil {
				fail(gnttab.BadDomain, err)
				return
			}
			if st := gnttab.Status(resp.Status); st != gnttab.Okay {
				fail(st, grantErr(fmt.Sprintf("map of dom%d ref %d on host %q", granter, m.Ref, host), st))
				return
			}
			if h.doms[d.id] != d {
				undo()
				return
			}
			mp, st := h.gnt.MapRemote(d.id, host, granter, gnttab.Ref(m.Ref), resp.Frame, readonly, gen)
			if st != gnttab.Okay {
				undo()
				fail(st, grantErr("map", st))
				return
			}
			d.maps[mp.Handle] = notify{m.Arg[0], m.Arg[1]}
			d.granterOff[mp.Handle] = resp.Arg[0]
			r.m.Handle, r.m.Frame, r.m.Dom, r.m.Ref = uint32(mp.Handle), mp.Frame, uint16(granter), m.Ref
			r.m.Flags = hypercall.FlagRemote
			h.finish(d, m, r, nil)
		})
	})
	return errDeferred
}

// acceptMap is the granter's side of mapRemote: pin, tell the granter's
// library (which sends the page over the link), answer.
// Preconditions: h.mu held.
func (h *Hypervisor) acceptMap(from string, m transport.Msg) {
	granter, mapper := DomID(m.ToDom), DomID(m.FromDom)
	if h.doms[granter] == nil {
		h.send(from, &transport.Msg{Kind: transport.KindMapResp, ID: m.ID, Status: int16(gnttab.BadDomain)})
		return
	}
	// The mapper's host links the pair first; the link may still be on its
	// way to the granter, whose library must have it to send the page.
	h.whenLinked(granter, mapper, from, func(err error) { h.acceptMapLinked(from, m, err) })
}

// acceptMapLinked pins and answers, once the pair is linked.
// Preconditions: h.mu held.
func (h *Hypervisor) acceptMapLinked(from string, m transport.Msg, linkErr error) {
	resp := &transport.Msg{Kind: transport.KindMapResp, ID: m.ID, Arg: [4]uint32{gnttab.NoNotify}}
	granter, mapper := DomID(m.ToDom), DomID(m.FromDom)
	d := h.doms[granter]
	readonly := m.Flags&abi.GNTMAP_readonly != 0
	switch {
	case d == nil:
		resp.Status = int16(gnttab.BadDomain)
	case linkErr != nil:
		resp.Status = int16(gnttab.GeneralError)
	default:
		p, st := h.gnt.PinRemote(gnttab.RemotePin{Host: from, Mapper: mapper, Granter: granter, Ref: gnttab.Ref(m.Ref),
			Gen: m.Arg[0], Readonly: readonly, NotifyOff: m.Arg[1]})
		resp.Status = int16(st)
		if st != gnttab.Okay {
			h.refuseLocked(d, hypercall.Msg{Op: hypercall.OpGnttabMap, Dom: m.FromDom, Ref: m.Ref},
				fmt.Errorf("map of ref %d by dom%d on host %q: %v", m.Ref, mapper, from, st))
			break
		}
		resp.Frame = p.Frame
		if n, ok := d.shares[p.Frame]; ok {
			resp.Arg[0] = n.off
		}
		var flags uint16
		if readonly {
			flags = abi.GNTMAP_readonly
		}
		d.notify(hypercall.Msg{Op: hypercall.NotifyGnttabRemoteMap, Ref: m.Ref, Frame: p.Frame, Dom: uint16(mapper),
			Flags: flags, Arg: [4]uint32{p.Gen}})
	}
	h.send(from, resp)
}

// remoteUnpin is OpGnttabRemoteUnpin: d's library saw the fence of a
// mapper of another host.
// Preconditions: h.mu held.
func (h *Hypervisor) remoteUnpin(d *vdom, m hypercall.Msg) error {
	for _, p := range h.gnt.RemotePins(d.id) {
		if p.Mapper == DomID(m.Dom) && p.Ref == gnttab.Ref(m.Ref) {
			h.gnt.UnpinRemote(p.Host, p.Mapper, d.id, p.Ref, m.Arg[0])
			return nil
		}
	}
	return nil // already dropped (the mapper or its host died)
}

// copyRemote runs a gnttab_copy with a grant side on another host: read
// the source (locally or there), then write the destination (locally or
// there).
// Preconditions: h.mu held.
func (h *Hypervisor) copyRemote(d *vdom, m hypercall.Msg, r *reply, c abi.GnttabCopy, src, dst copySide) error {
	fail := func(st gnttab.Status) {
		r.m.Status = int16(st)
		h.finish(d, m, r, grantErr("copy", st))
	}
	put := func(data []byte) {
		if dst.host != "" {
			h.call(dst.host, &transport.Msg{Kind: transport.KindCopyReq, Flags: copyWrite, FromDom: uint16(d.id),
				ToDom: uint16(dst.dom), Ref: uint32(dst.ref), Arg: [4]uint32{uint32(c.Dest.Offset), uint32(c.Len)}, Data: data},
				func(resp *transport.Msg, err error) {
					if err != nil {
						fail(gnttab.BadDomain)
						return
					}
					if st := gnttab.Status(resp.Status); st != gnttab.Okay {
						fail(st)
						return
					}
					h.finish(d, m, r, nil)
				})
			return
		}
		if h.doms[d.id] != d {
			return
		}
		if st := h.localCopy(d, dst, c.Dest.Offset, data, true); st != gnttab.Okay {
			fail(st)
			return
		}
		if dst.inline {
			r.m.Data = data
		}
		h.finish(d, m, r, nil)
	}
	if src.host == "" {
		data := make([]byte, c.Len)
		if src.inline {
			copy(data, m.Data[abi.GnttabCopySize:])
		} else if st := h.localCopy(d, src, c.Source.Offset, data, false); st != gnttab.Okay {
			r.m.Status = int16(st)
			return grantErr("copy", st)
		}
		put(data)
		return errDeferred
	}
	h.call(src.host, &transport.Msg{Kind: transport.KindCopyReq, FromDom: uint16(d.id), ToDom: uint16(src.dom),
		Ref: uint32(src.ref), Arg: [4]uint32{uint32(c.Source.Offset), uint32(c.Len)}}, func(resp *transport.Msg, err error) {
		if err != nil {
			fail(gnttab.BadDomain)
			return
		}
		if st := gnttab.Status(resp.Status); st != gnttab.Okay {
			fail(st)
			return
		}
		if len(resp.Data) != int(c.Len) {
			fail(gnttab.GeneralError)
			return
		}
		put(append([]byte(nil), resp.Data...))
	})
	return errDeferred
}

// copySide is one side of a copy: a grant of dom (on host, or local), a
// frame of the caller, or the bytes in the message.
type copySide struct {
	grant  bool
	dom    DomID
	ref    gnttab.Ref
	frame  uint32
	inline bool
	host   string // the granter's host, "" if local
}

// localCopy reads (write false) or writes data at off of a local side.
// Preconditions: h.mu held.
func (h *Hypervisor) localCopy(d *vdom, s copySide, off uint16, data []byte, write bool) gnttab.Status {
	if s.inline {
		return gnttab.Okay
	}
	var page []byte
	if s.grant {
		p, release, st := h.gnt.Access(d.id, s.dom, s.ref, !write)
		if st != gnttab.Okay {
			return st
		}
		defer release()
		page = p
	} else if page = (*frames)(h).Frame(d.id, s.frame); page == nil {
		return gnttab.BadPage
	}
	if write {
		copy(page[off:], data)
	} else {
		copy(data, page[off:])
	}
	return gnttab.Okay
}

// acceptCopy is the granter's side of copyRemote.
// Preconditions: h.mu held.
func (h *Hypervisor) acceptCopy(from string, m transport.Msg) {
	resp := &transport.Msg{Kind: transport.KindCopyResp, ID: m.ID}
	off, n := m.Arg[0], m.Arg[1]
	write := m.Flags&copyWrite != 0
	switch {
	case off+n > abi.PAGE_SIZE || (write && len(m.Data) != int(n)):
		resp.Status = int16(gnttab.BadCopyArg)
	default:
		page, release, st := h.gnt.Access(DomID(m.FromDom), DomID(m.ToDom), gnttab.Ref(m.Ref), !write)
		resp.Status = int16(st)
		if st == gnttab.Okay {
			if write {
				copy(page[off:], m.Data)
			} else {
				resp.Data = append([]byte(nil), page[off:off+n]...)
			}
			release()
		}
	}
	h.send(from, resp)
}
