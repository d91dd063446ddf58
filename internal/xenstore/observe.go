package xenstore

// Facets of a node a transaction can observe. A commit conflicts only when
// an observed facet changed, so two transactions that add different
// children under one parent do not conflict, while one that listed the
// parent's children does.
const (
	obsExist    uint8 = 1 << iota // whether the path exists (and which incarnation)
	obsValue                      // the value
	obsPerms                      // the permission list
	obsChildren                   // the child list
)

// Observation is what a transaction saw of one path in its snapshot. It is
// checked against the tree when the transaction commits.
type Observation struct {
	Path    string
	Facets  uint8
	Present bool
	Created uint64
	VGen    uint64
	PGen    uint64
	CGen    uint64
}

// holds reports whether what was observed is still true in s.
func (o *Observation) holds(s *State) bool {
	n := s.Get(o.Path)
	if !o.Present {
		return n == nil
	}
	if n == nil || n.Created != o.Created {
		return false
	}
	return (o.Facets&obsValue == 0 || n.VGen == o.VGen) &&
		(o.Facets&obsPerms == 0 || n.PGen == o.PGen) &&
		(o.Facets&obsChildren == 0 || n.CGen == o.CGen)
}

// observer records a transaction's first view of each path it touches,
// taken from the snapshot the transaction started on.
type observer struct {
	snap  *State
	seen  map[string]*Observation
	order []string // paths in first-access order, for a deterministic command
}

func newObserver(snap *State) *observer {
	return &observer{snap: snap, seen: map[string]*Observation{}}
}

func (o *observer) see(path string, facets uint8) {
	if o == nil {
		return
	}
	if ob, ok := o.seen[path]; ok {
		ob.Facets |= facets
		return
	}
	ob := &Observation{Path: path, Facets: facets}
	if n := o.snap.Get(path); n != nil {
		ob.Present = true
		ob.Created, ob.VGen, ob.PGen, ob.CGen = n.Created, n.VGen, n.PGen, n.CGen
	}
	o.seen[path] = ob
	o.order = append(o.order, path)
}

func (o *observer) list() []Observation {
	out := make([]Observation, len(o.order))
	for i, p := range o.order {
		out[i] = *o.seen[p]
	}
	return out
}
