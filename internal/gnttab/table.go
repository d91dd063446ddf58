package gnttab

import (
	"errors"
	"fmt"
	"slices"

	"shi/internal/abi"
	"shi/internal/ring"
)

// Frames gives the agent's view of domains' shareable pages.
type Frames interface {
	// Frame returns the page that dom registered as frame gfn
	// (abi.PAGE_SIZE bytes), or nil if there is none.
	Frame(dom DomID, gfn uint32) []byte
}

// Config bounds one domain's use of the table.
type Config struct {
	// MaxMaps caps the grants the domain may have mapped at once
	// (xengnttab_set_max_grants); 0 means DefaultMaxMaps.
	MaxMaps int
}

// DefaultMaxMaps is the default Config.MaxMaps.
const DefaultMaxMaps = 4096

// Mapping is one grant mapped by a domain.
type Mapping struct {
	Mapper   DomID
	Handle   Handle
	Granter  DomID
	Ref      Ref
	Frame    uint32
	Readonly bool
	// Host is the granter's host for a grant of another host ("" when
	// local), and Gen the generation the mapper's library gave the map.
	Host string
	Gen  uint32
	// Revoked: the granter is gone. The handle stays the mapper's (and
	// takes a maptrack slot) until it unmaps it, as in Xen, where a dead
	// granter's page stays mapped until then; so a handle never names
	// two maps at once.
	Revoked bool
}

// active is Xen's active grant entry: a grant pinned by maps or copies.
// While pinned, the frame and the grantee are taken from here, not from
// the shared entry, which the granter could rewrite.
type active struct {
	mapper           DomID
	frame            uint32
	readers, writers int
}

type domain struct {
	id     DomID
	table  []byte          // its grant table, shared with it
	active map[Ref]*active // its grants that are pinned
	maps   []*Mapping      // maptrack: what it maps, by handle; nil = free
	free   []Handle        // free handles below len(maps)
	nmaps  int
	max    int
	remote []RemotePin // pins domains of other hosts hold on its grants
}

// Table holds the grant state of every domain on one host.
type Table struct {
	doms   map[DomID]*domain
	frames Frames
}

// New returns an empty table whose frames are resolved through frames.
func New(frames Frames) *Table {
	return &Table{doms: make(map[DomID]*domain), frames: frames}
}

// ErrDomain reports AddDomain misuse.
var ErrDomain = errors.New("gnttab: bad domain")

// AddDomain registers a domain and its grant table (shared with it; a
// multiple of 8 bytes, 4-byte aligned).
func (t *Table) AddDomain(dom DomID, table []byte, cfg Config) error {
	if t.doms[dom] != nil || dom >= abi.DOMID_FIRST_RESERVED || len(table)%abi.GrantEntryV1Size != 0 || !ring.Aligned(table) {
		return fmt.Errorf("%w: dom%d", ErrDomain, dom)
	}
	max := cfg.MaxMaps
	if max <= 0 {
		max = DefaultMaxMaps
	}
	t.doms[dom] = &domain{id: dom, table: table, active: map[Ref]*active{}, max: max}
	return nil
}

// Removed is what RemoveDomain tore down.
type Removed struct {
	// Unmapped are the dying domain's own mappings; their pins on other
	// domains' grants have been dropped.
	Unmapped []Mapping
	// Revoked are other domains' mappings of the dying domain's grants.
	// They are gone from the table; the agent must tell each mapper.
	Revoked []Mapping
	// RemotePins are the pins domains of other hosts held on its grants;
	// the agent tells their hosts.
	RemotePins []RemotePin
}

// RemoveDomain forgets a dead domain: it unmaps everything the domain had
// mapped and revokes every mapping of its grants.
func (t *Table) RemoveDomain(dom DomID) Removed {
	d := t.doms[dom]
	if d == nil {
		return Removed{}
	}
	var r Removed
	for _, m := range d.maps {
		if m != nil && !m.Revoked {
			t.unpin(m)
			r.Unmapped = append(r.Unmapped, *m)
		}
	}
	r.RemotePins = d.remote
	delete(t.doms, dom)
	for _, md := range t.doms {
		for _, m := range md.maps {
			if m != nil && m.Granter == dom && m.Host == "" && !m.Revoked {
				m.Revoked = true
				r.Revoked = append(r.Revoked, *m)
			}
		}
	}
	return r
}

// sortedDoms lists the domains in id order, for reproducible results.
func (t *Table) sortedDoms() []DomID {
	ids := make([]DomID, 0, len(t.doms))
	for id := range t.doms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// pin takes a read or write pin on granter's ref for dom, checking and
// updating the shared entry as Xen's map_grant_ref and
// acquire_grant_for_copy do. It returns the active entry's frame.
func (t *Table) pin(g *domain, ref Ref, dom DomID, readonly, mapping bool) (uint32, Status) {
	if int64(ref) >= int64(Entries(g.table)) {
		return 0, BadGntref
	}
	act := g.active[ref]
	if act != nil && act.mapper != dom {
		return 0, GeneralError
	}
	if act == nil || (!readonly && act.writers == 0) {
		if st := setStatus(g.table, ref, dom, readonly, mapping, act != nil); st != Okay {
			return 0, st
		}
	}
	if act == nil {
		frame := ReadEntry(g.table, ref).Frame
		if t.page(g.id, frame) == nil {
			clearFlags(g.table, ref, abi.GTF_reading|abi.GTF_writing)
			return 0, BadPage
		}
		act = &active{mapper: dom, frame: frame}
		g.active[ref] = act
	}
	if readonly {
		act.readers++
	} else {
		act.writers++
	}
	return act.frame, Okay
}

// unpinRef drops one pin and clears GTF_writing/GTF_reading when the last
// writer/user goes.
func unpinRef(g *domain, ref Ref, readonly bool) {
	act := g.active[ref]
	if act == nil {
		return
	}
	if readonly {
		act.readers--
	} else if act.writers--; act.writers == 0 {
		clearFlags(g.table, ref, abi.GTF_writing)
	}
	if act.readers+act.writers == 0 {
		clearFlags(g.table, ref, abi.GTF_reading)
		delete(g.active, ref)
	}
}

// page returns dom's frame gfn, or nil if it has none.
func (t *Table) page(dom DomID, gfn uint32) []byte {
	p := t.frames.Frame(dom, gfn)
	if len(p) < abi.PAGE_SIZE {
		return nil
	}
	return p[:abi.PAGE_SIZE]
}

func (t *Table) unpin(m *Mapping) {
	if m.Host != "" {
		return // pinned on the granter's host
	}
	if g := t.doms[m.Granter]; g != nil {
		unpinRef(g, m.Ref, m.Readonly)
	}
}

// Map is GNTTABOP_map_grant_ref: mapper maps granter's ref. granter may be
// DOMID_SELF. On Okay the agent hands the mapper the page of (granter,
// Frame), read-only if asked.
func (t *Table) Map(mapper, granter DomID, ref Ref, readonly bool) (Mapping, Status) {
	md := t.doms[mapper]
	if granter == abi.DOMID_SELF {
		granter = mapper
	}
	g := t.doms[granter]
	if md == nil || g == nil {
		return Mapping{}, BadDomain
	}
	if md.nmaps >= md.max {
		return Mapping{}, NoSpace
	}
	frame, st := t.pin(g, ref, mapper, readonly, true)
	if st != Okay {
		return Mapping{}, st
	}
	// The mapper gets the page itself and may keep it: the granter
	// replaces the page when it ends this grant.
	ring.Or32(g.table, entryOff(ref), abi.GTF_shi_mapped)
	m := &Mapping{Mapper: mapper, Granter: granter, Ref: ref, Frame: frame, Readonly: readonly}
	m.Handle = md.track(m)
	return *m, Okay
}

// Unmap is GNTTABOP_unmap_grant_ref for one handle of mapper.
func (t *Table) Unmap(mapper DomID, h Handle) (Mapping, Status) {
	md := t.doms[mapper]
	if md == nil {
		return Mapping{}, BadDomain
	}
	if int64(h) >= int64(len(md.maps)) || md.maps[h] == nil {
		return Mapping{}, BadHandle
	}
	m := md.maps[h]
	if !m.Revoked {
		t.unpin(m)
	}
	md.release(h)
	return *m, Okay
}

// Mappings lists what dom has mapped, by handle, revoked maps left out.
func (t *Table) Mappings(dom DomID) []Mapping {
	var out []Mapping
	if d := t.doms[dom]; d != nil {
		for _, m := range d.maps {
			if m != nil && !m.Revoked {
				out = append(out, *m)
			}
		}
	}
	return out
}

func (d *domain) track(m *Mapping) Handle {
	d.nmaps++
	if n := len(d.free); n > 0 {
		h := d.free[n-1]
		d.free = d.free[:n-1]
		d.maps[h] = m
		return h
	}
	d.maps = append(d.maps, m)
	return Handle(len(d.maps) - 1)
}

func (d *domain) release(h Handle) {
	d.maps[h] = nil
	d.free = append(d.free, h)
	d.nmaps--
}

// FramePinned reports whether some grant of dom's on frame gfn is pinned
// (mapped, or being copied through): such a page must not be withdrawn.
func (t *Table) FramePinned(dom DomID, gfn uint32) bool {
	if d := t.doms[dom]; d != nil {
		for _, a := range d.active {
			if a.frame == gfn {
				return true
			}
		}
	}
	return false
}
