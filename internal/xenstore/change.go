package xenstore

import (
	"syscall"

	iradix "github.com/hashicorp/go-immutable-radix"
)

// Event is one change a watch may fire for, with the permissions needed to
// decide which watchers may see it (watch_permitted in C xenstored).
type Event struct {
	Path  string
	Exact bool // fires only watches on exactly Path (descendants of a removed node)

	Perms       Perms // the node's permissions (before removal, after a write)
	OldPerms    Perms // before a SET_PERMS, else nil
	ParentPerms Perms // the parent's permissions, nil for "/" and special events
}

// change is a State being modified: the mutable builder behind Apply and
// behind a transaction's private view. Nothing is visible to anyone until
// commit returns the new State; an error leaves the base untouched.
type change struct {
	base   *State
	nodes  *iradix.Txn
	owners *iradix.Txn
	gen    uint64
	meta   *meta
	metaMu bool // meta was copied and may be modified

	caller Caller
	obs    *observer // nil outside transactions
	events []Event
}

func (s *State) begin(c Caller, obs *observer) *change {
	return &change{
		base:   s,
		nodes:  s.nodes.Txn(),
		owners: s.owners.Txn(),
		gen:    s.gen,
		meta:   s.meta,
		caller: c,
		obs:    obs,
	}
}

func (x *change) commit() *State {
	return &State{nodes: x.nodes.CommitOnly(), owners: x.owners.CommitOnly(), gen: x.gen, meta: x.meta}
}

func (x *change) writableMeta() *meta {
	if !x.metaMu {
		x.meta = x.meta.clone()
		x.metaMu = true
	}
	return x.meta
}

func (x *change) next() uint64 {
	x.gen++
	return x.gen
}

func (x *change) get(path string) *Node {
	v, ok := x.nodes.Get([]byte(path))
	if !ok {
		return nil
	}
	return v.(*Node)
}

func (x *change) put(path string, n *Node) { x.nodes.Insert([]byte(path), n) }

func (x *change) addOwned(dom uint32, d int) {
	k := domKey(dom)
	cur := 0
	if v, ok := x.owners.Get(k); ok {
		cur = v.(int)
	}
	if cur+d == 0 {
		x.owners.Delete(k)
		return
	}
	x.owners.Insert(k, cur+d)
}

func (x *change) owned(dom uint32) int {
	if v, ok := x.owners.Get(domKey(dom)); ok {
		return v.(int)
	}
	return 0
}

func (x *change) unprivileged() bool { return !x.caller.Privileged }

// checkPath validates an absolute path and, for unprivileged callers, the
// path-length quota.
func (x *change) checkPath(path string) syscall.Errno {
	if !validPath(path) {
		return syscall.EINVAL
	}
	if x.unprivileged() && relLen(path) > x.meta.quota.MaxPathLen {
		return syscall.EINVAL
	}
	return 0
}

// lookup is get_node: the node at path if the caller has want on it.
// A missing node gives ENOENT, unless the caller could not have known
// (no want-rights on the nearest existing ancestor), which gives EACCES.
func (x *change) lookup(path string, want uint8, facets uint8) (*Node, syscall.Errno) {
	if e := x.checkPath(path); e != 0 {
		return nil, e
	}
	n := x.get(path)
	x.obs.see(path, facets|obsExist)
	if n != nil {
		x.obs.see(path, obsPerms)
		if !x.caller.can(n.Perms, want) {
			return nil, syscall.EACCES
		}
		return n, 0
	}
	for p := path; p != "/"; {
		p = parentOf(p)
		a := x.get(p)
		x.obs.see(p, obsExist)
		if a == nil {
			continue
		}
		x.obs.see(p, obsPerms)
		if x.caller.access(a.Perms)&want != 0 {
			return nil, syscall.ENOENT
		}
		return nil, syscall.EACCES
	}
	return nil, syscall.EACCES // no root: cannot happen in a valid tree
}

func (x *change) checkSize(n *Node) syscall.Errno {
	if x.unprivileged() && nodeRecordSize(n) >= x.meta.quota.MaxNodeSize {
		return syscall.ENOSPC
	}
	return 0
}

func (x *change) parentPerms(path string) Perms {
	if path == "/" {
		return nil
	}
	if p := x.get(parentOf(path)); p != nil {
		return p.Perms
	}
	return nil
}

// write sets path's value, creating it and missing ancestors.
func (x *change) write(path string, value []byte) syscall.Errno {
	n, e := x.lookup(path, PermWrite, obsValue)
	switch e {
	case 0:
		c := n.clone()
		c.Value = value
		c.VGen = x.next()
		if e := x.checkSize(c); e != 0 {
			return e
		}
		x.put(path, c)
		x.events = append(x.events, Event{Path: path, Perms: c.Perms, ParentPerms: x.parentPerms(path)})
		return 0
	case syscall.ENOENT:
		return x.create(path, value)
	default:
		return e
	}
}

// mkdir creates path with an empty value unless it exists.
func (x *change) mkdir(path string) syscall.Errno {
	_, e := x.lookup(path, PermWrite, 0)
	if e == syscall.ENOENT {
		return x.create(path, nil)
	}
	return e
}

// create is construct_node + create_node: path and its missing ancestors
// are created, each inheriting its parent's permissions, owned by the
// creator when the creator is unprivileged.
func (x *change) create(path string, value []byte) syscall.Errno {
	// Find the nearest existing ancestor and the names to create below it.
	var missing []string
	anc := path
	for {
		missing = append(missing, anc)
		anc = parentOf(anc)
		if x.get(anc) != nil {
			break
		}
	}
	if x.unprivileged() && x.owned(x.caller.Dom)+len(missing) > x.meta.quota.MaxNodes {
		return syscall.ENOSPC
	}
	parent := x.get(anc)
	x.obs.see(anc, obsExist)
	g := x.next()
	pc := parent.clone()
	pc.Children = append(append([]string(nil), parent.Children...), baseOf(missing[len(missing)-1]))
	pc.CGen = g
	if e := x.checkSize(pc); e != 0 {
		return e
	}
	x.put(anc, pc)
	perms := parent.Perms
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		np := append(Perms(nil), perms...)
		if x.unprivileged() {
			np[0].Dom = x.caller.Dom
		}
		n := &Node{Perms: np, Created: g, VGen: g, PGen: g, CGen: g}
		if i == 0 {
			n.Value = value
		} else {
			n.Children = []string{baseOf(missing[i-1])}
		}
		if e := x.checkSize(n); e != 0 {
			return e
		}
		x.put(p, n)
		x.addOwned(np.Owner(), 1)
		perms = np
	}
	x.events = append(x.events, Event{Path: path, Perms: perms, ParentPerms: x.parentPerms(path)})
	return 0
}

// rm removes path and its subtree. A missing node is fine if its parent
// exists.
func (x *change) rm(path string) syscall.Errno {
	n, e := x.lookup(path, PermWrite, 0)
	if e == syscall.ENOENT {
		pp := parentOf(path)
		x.obs.see(pp, obsExist)
		if path != "/" && x.get(pp) != nil {
			return 0
		}
		return syscall.ENOENT
	}
	if e != 0 {
		return e
	}
	if path == "/" {
		return syscall.EINVAL
	}
	ppath := parentOf(path)
	parent := x.get(ppath)
	pp := parent.Perms
	// Descendants fire only watches on exactly their own path, deepest
	// first; the removed node itself fires last, for watches on it and its
	// ancestors (delete_node with watch_exact in C xenstored).
	x.removeTree(path, n, true)
	x.events = append(x.events, Event{Path: path, Perms: n.Perms, ParentPerms: pp})
	pc := parent.clone()
	pc.Children = without(parent.Children, baseOf(path))
	pc.CGen = x.next()
	x.put(ppath, pc)
	return 0
}

func (x *change) removeTree(path string, n *Node, top bool) {
	for _, c := range n.Children {
		cp := childPath(path, c)
		if cn := x.get(cp); cn != nil {
			x.removeTree(cp, cn, false)
			x.events = append(x.events, Event{Path: cp, Exact: true, Perms: cn.Perms, ParentPerms: n.Perms})
		}
	}
	x.nodes.Delete([]byte(path))
	x.addOwned(n.Perms.Owner(), -1)
}

func without(list []string, name string) []string {
	out := make([]string, 0, len(list))
	for _, c := range list {
		if c != name {
			out = append(out, c)
		}
	}
	return out
}

// setPerms replaces a node's permission list.
func (x *change) setPerms(path string, perms Perms) syscall.Errno {
	if len(perms) == 0 {
		return syscall.EINVAL
	}
	if x.unprivileged() && len(perms) > x.meta.quota.MaxPerms {
		return syscall.ENOSPC
	}
	if path == IntroduceDomain || path == ReleaseDomain {
		if !x.caller.can(x.meta.special[path], PermWrite|permOwner) {
			return syscall.EACCES
		}
		x.writableMeta().special[path] = cleanPerms(perms)
		return 0
	}
	if len(path) > 0 && path[0] == '@' {
		return syscall.EINVAL
	}
	n, e := x.lookup(path, PermWrite|permOwner, obsPerms)
	if e != 0 {
		return e
	}
	if x.unprivileged() && perms.Owner() != n.Perms.Owner() {
		return syscall.EPERM
	}
	c := n.clone()
	c.Perms = cleanPerms(perms)
	c.PGen = x.next()
	if e := x.checkSize(c); e != 0 {
		return e
	}
	x.put(path, c)
	if c.Perms.Owner() != n.Perms.Owner() {
		x.addOwned(n.Perms.Owner(), -1)
		x.addOwned(c.Perms.Owner(), 1)
	}
	x.events = append(x.events, Event{Path: path, Perms: c.Perms, OldPerms: n.Perms, ParentPerms: x.parentPerms(path)})
	return 0
}

// cleanPerms copies a permission list keeping only the read and write
// bits, whatever a decoded command carried.
func cleanPerms(ps Perms) Perms {
	out := make(Perms, len(ps))
	for i, p := range ps {
		out[i] = Perm{Dom: p.Dom, Bits: p.Bits & (PermRead | PermWrite)}
	}
	return out
}
