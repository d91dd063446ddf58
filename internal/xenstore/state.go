package xenstore

import (
	"encoding/binary"
	"sort"
	"strings"

	iradix "github.com/hashicorp/go-immutable-radix"
)

// Node is one XenStore node. Nodes are immutable once stored: a change
// makes a new Node, so a State can be shared by readers, snapshots and
// transactions without copying.
type Node struct {
	Value    []byte
	Perms    Perms
	Children []string // names, in creation order

	// Generations, from the State's counter: Created identifies this
	// incarnation of the path; VGen, PGen and CGen are the last change of
	// the value, the permissions and the child list. Transactions compare
	// them to find conflicts; XS_DIRECTORY_PART reports Gen().
	Created, VGen, PGen, CGen uint64
}

// Gen is the node's generation count as XS_DIRECTORY_PART reports it.
func (n *Node) Gen() uint64 { return max(n.VGen, n.PGen, n.CGen) }

func (n *Node) clone() *Node {
	c := *n
	return &c
}

// meta is the replicated state beside the tree: special-node permissions,
// introduced domains and SET_TARGET links. Immutable like Node.
type meta struct {
	special    map[string]Perms  // @introduceDomain, @releaseDomain
	introduced map[uint32]bool   // domains introduced (dom0 always)
	targets    map[uint32]uint32 // domid -> target domid
	quota      Quota
}

func (m *meta) clone() *meta {
	c := &meta{
		special:    make(map[string]Perms, len(m.special)),
		introduced: make(map[uint32]bool, len(m.introduced)),
		targets:    make(map[uint32]uint32, len(m.targets)),
		quota:      m.quota,
	}
	for k, v := range m.special {
		c.special[k] = v
	}
	for k, v := range m.introduced {
		c.introduced[k] = v
	}
	for k, v := range m.targets {
		c.targets[k] = v
	}
	return c
}

// State is one immutable version of the whole XenStore: the tree, the
// per-domain node counts and the meta data. Apply returns a new State and
// leaves the old one intact, which gives transactions a snapshot and the
// directory a Raft snapshot for free.
type State struct {
	nodes  *iradix.Tree // path -> *Node
	owners *iradix.Tree // big-endian domid -> int (nodes owned)
	gen    uint64       // last generation handed out
	meta   *meta
}

// NewState returns a store holding only the root node "/" (owner dom0, no
// access for others) with the given quota.
func NewState(q Quota) *State {
	root := &Node{Perms: Perms{{Dom: 0}}, Created: 1, VGen: 1, PGen: 1, CGen: 1}
	nodes, _, _ := iradix.New().Insert([]byte("/"), root)
	owners, _, _ := iradix.New().Insert(domKey(0), 1)
	return &State{
		nodes:  nodes,
		owners: owners,
		gen:    1,
		meta: &meta{
			special: map[string]Perms{
				IntroduceDomain: {{Dom: 0}},
				ReleaseDomain:   {{Dom: 0}},
			},
			introduced: map[uint32]bool{0: true},
			targets:    map[uint32]uint32{},
			quota:      q,
		},
	}
}

func domKey(d uint32) []byte { return binary.BigEndian.AppendUint32(nil, d) }

// Get returns the node at an absolute path, or nil.
func (s *State) Get(path string) *Node {
	v, ok := s.nodes.Get([]byte(path))
	if !ok {
		return nil
	}
	return v.(*Node)
}

// Len is the number of nodes.
func (s *State) Len() int { return s.nodes.Len() }

// Generation is the last generation number handed out; it grows with every
// applied change and is the same on every replica after the same commands.
func (s *State) Generation() uint64 { return s.gen }

// Quota returns the replicated quota.
func (s *State) Quota() Quota { return s.meta.quota }

// Owned is the number of nodes owned by dom.
func (s *State) Owned(dom uint32) int {
	v, ok := s.owners.Get(domKey(dom))
	if !ok {
		return 0
	}
	return v.(int)
}

// Introduced reports whether dom has been introduced (dom0 always is).
func (s *State) Introduced(dom uint32) bool { return s.meta.introduced[dom] }

// IntroducedDomains lists introduced domains in ascending order.
func (s *State) IntroducedDomains() []uint32 {
	out := make([]uint32, 0, len(s.meta.introduced))
	for d := range s.meta.introduced {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Caller returns the caller identity of dom in this state: domain 0 is
// privileged, and SET_TARGET links are honoured.
func (s *State) Caller(dom uint32) Caller {
	c := Caller{Dom: dom, Privileged: dom == 0, Target: NoTarget}
	if t, ok := s.meta.targets[dom]; ok {
		c.Target = t
	}
	return c
}

// Walk calls fn for every node in path order.
func (s *State) Walk(fn func(path string, n *Node) bool) {
	s.nodes.Root().Walk(func(k []byte, v interface{}) bool {
		return !fn(string(k), v.(*Node))
	})
}

// Dump renders the tree for tests and debugging: one line per node,
// children in creation order, "path = value (perms)".
func (s *State) Dump(from string) string {
	var b strings.Builder
	var walk func(p string)
	walk = func(p string) {
		n := s.Get(p)
		if n == nil {
			return
		}
		b.WriteString(p)
		b.WriteString(" = ")
		b.WriteString(quoteValue(n.Value))
		b.WriteString(" (")
		b.WriteString(n.Perms.String())
		b.WriteString(")\n")
		for _, c := range n.Children {
			walk(childPath(p, c))
		}
	}
	walk(from)
	return b.String()
}

func quoteValue(v []byte) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range v {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b.WriteByte(c)
		} else {
			const hex = "0123456789abcdef"
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	b.WriteByte('"')
	return b.String()
}
