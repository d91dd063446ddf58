package gnttab

// The cross-host half of the table.
//
// On the granter's host a map by a domain of another host is a RemotePin:
// the grant is pinned exactly as for a local map (GTF_reading/GTF_writing
// set, the active entry holds the frame), and the pin is recorded with
// the mapping host, so that a dead host's pins can be dropped at once.
// The mapper's library fences its last unmap on the link to the granter
// and the granter's library then asks for UnpinRemote, so the granter can
// end access only after every byte the mapper wrote has been applied.
//
// On the mapper's host the same map is a Mapping with Host set: it takes
// a maptrack slot and a handle like a local map, and nothing else; the
// page is a replica the mapper's library keeps coherent.

// RemotePin is a pin a domain of another host holds on a local grant.
type RemotePin struct {
	Host     string
	Mapper   DomID
	Granter  DomID
	Ref      Ref
	Gen      uint32 // the mapper's mapping generation, chosen by its library
	Readonly bool
	Frame    uint32 // set by PinRemote
	// NotifyOff is the mapper's unmap notification byte (NoNotify: none),
	// cleared in the granter's page if the mapper dies holding the pin.
	NotifyOff uint32
}

// NoNotify means no unmap notification byte.
const NoNotify = ^uint32(0)

// PinRemote pins granter's ref for p.Mapper on p.Host, checking the entry
// as Map does, and returns the pin with its frame.
func (t *Table) PinRemote(p RemotePin) (RemotePin, Status) {
	g := t.doms[p.Granter]
	if g == nil || p.Host == "" {
		return p, BadDomain
	}
	frame, st := t.pin(g, p.Ref, p.Mapper, p.Readonly, true)
	if st != Okay {
		return p, st
	}
	p.Frame = frame
	g.remote = append(g.remote, p)
	return p, Okay
}

// UnpinRemote drops the pins that mapper on host holds on granter's ref
// with a generation up to gen, and returns them.
func (t *Table) UnpinRemote(host string, mapper, granter DomID, ref Ref, gen uint32) []RemotePin {
	return t.unpinRemote(func(p RemotePin) bool {
		return p.Host == host && p.Mapper == mapper && p.Granter == granter && p.Ref == ref && p.Gen <= gen
	})
}

// DropRemoteMapper drops every pin of mapper on host: it died.
func (t *Table) DropRemoteMapper(host string, mapper DomID) []RemotePin {
	return t.unpinRemote(func(p RemotePin) bool { return p.Host == host && p.Mapper == mapper })
}

// DropHostPins drops every pin held by domains of host: it died.
func (t *Table) DropHostPins(host string) []RemotePin {
	return t.unpinRemote(func(p RemotePin) bool { return p.Host == host })
}

func (t *Table) unpinRemote(match func(RemotePin) bool) []RemotePin {
	var out []RemotePin
	for _, id := range t.sortedDoms() {
		g := t.doms[id]
		keep := g.remote[:0]
		for _, p := range g.remote {
			if match(p) {
				unpinRef(g, p.Ref, p.Readonly)
				out = append(out, p)
			} else {
				keep = append(keep, p)
			}
		}
		clear(g.remote[len(keep):])
		g.remote = keep
	}
	return out
}

// RemotePins lists the pins other hosts hold on granter's grants.
func (t *Table) RemotePins(granter DomID) []RemotePin {
	if g := t.doms[granter]; g != nil {
		return append([]RemotePin(nil), g.remote...)
	}
	return nil
}

// Access pins granter's ref for one copy by caller, who may be a domain of
// another host, and returns the page and the function that unpins it:
// GNTTABOP_copy's grant side, done on the granter's host.
func (t *Table) Access(caller, granter DomID, ref Ref, readonly bool) ([]byte, func(), Status) {
	g := t.doms[granter]
	if g == nil {
		return nil, nil, BadDomain
	}
	frame, st := t.pin(g, ref, caller, readonly, false)
	if st != Okay {
		return nil, nil, st
	}
	page := t.page(granter, frame)
	if page == nil {
		unpinRef(g, ref, readonly)
		return nil, nil, BadPage
	}
	return page, func() { unpinRef(g, ref, readonly) }, Okay
}

// MapRemote records that mapper maps granter's ref on host (whose agent
// pinned it): a maptrack slot and a handle, as for a local map.
func (t *Table) MapRemote(mapper DomID, host string, granter DomID, ref Ref, frame uint32, readonly bool, gen uint32) (Mapping, Status) {
	md := t.doms[mapper]
	if md == nil || host == "" {
		return Mapping{}, BadDomain
	}
	if md.nmaps >= md.max {
		return Mapping{}, NoSpace
	}
	m := &Mapping{Mapper: mapper, Granter: granter, Ref: ref, Frame: frame, Readonly: readonly, Host: host, Gen: gen}
	m.Handle = md.track(m)
	return *m, Okay
}

// HasRoom reports whether mapper may map one more grant.
func (t *Table) HasRoom(mapper DomID) bool {
	md := t.doms[mapper]
	return md != nil && md.nmaps < md.max
}

// RevokeRemote removes every local mapping of granter's ref on host: the
// granter is gone. The agent tells each mapper.
func (t *Table) RevokeRemote(host string, granter DomID, ref Ref) []Mapping {
	return t.revoke(func(m *Mapping) bool { return m.Host == host && m.Granter == granter && m.Ref == ref })
}

// DropGranter removes every local mapping of a grant of granter on host.
func (t *Table) DropGranter(host string, granter DomID) []Mapping {
	return t.revoke(func(m *Mapping) bool { return m.Host == host && m.Granter == granter })
}

// DropGranterHost removes every local mapping of a grant of host: it died.
func (t *Table) DropGranterHost(host string) []Mapping {
	return t.revoke(func(m *Mapping) bool { return m.Host == host })
}

func (t *Table) revoke(match func(*Mapping) bool) []Mapping {
	var out []Mapping
	for _, id := range t.sortedDoms() {
		for _, m := range t.doms[id].maps {
			if m != nil && m.Host != "" && !m.Revoked && match(m) {
				m.Revoked = true // the handle stays until unmapped
				out = append(out, *m)
			}
		}
	}
	return out
}
