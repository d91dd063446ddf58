package xenstore

import (
	"fmt"
)

// Check verifies the tree's invariants: every node's parent exists and
// lists it exactly once, every listed child exists, permission lists are
// non-empty, generations are consistent, and the per-domain node counts
// match the owners. Tests and XS_CONTROL "check" use it.
func (s *State) Check() error {
	owned := map[uint32]int{}
	var err error
	s.Walk(func(p string, n *Node) bool {
		if !validPath(p) {
			err = fmt.Errorf("invalid path %q", p)
			return false
		}
		if len(n.Perms) == 0 {
			err = fmt.Errorf("%s: empty permission list", p)
			return false
		}
		if n.Gen() > s.gen || n.Created > n.Gen() {
			err = fmt.Errorf("%s: generation %d/%d beyond %d", p, n.Created, n.Gen(), s.gen)
			return false
		}
		owned[n.Perms.Owner()]++
		seen := map[string]bool{}
		for _, c := range n.Children {
			if seen[c] {
				err = fmt.Errorf("%s: child %q listed twice", p, c)
				return false
			}
			seen[c] = true
			if s.Get(childPath(p, c)) == nil {
				err = fmt.Errorf("%s: child %q missing", p, c)
				return false
			}
		}
		if p != "/" {
			par := s.Get(parentOf(p))
			if par == nil {
				err = fmt.Errorf("%s: parent missing", p)
				return false
			}
			n := 0
			for _, c := range par.Children {
				if c == baseOf(p) {
					n++
				}
			}
			if n != 1 {
				err = fmt.Errorf("%s: listed %d times by its parent", p, n)
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if s.Get("/") == nil {
		return fmt.Errorf("root missing")
	}
	for d, want := range owned {
		if got := s.Owned(d); got != want {
			return fmt.Errorf("domain %d owns %d nodes, counted %d", d, want, got)
		}
	}
	total := 0
	s.owners.Root().Walk(func(k []byte, v interface{}) bool {
		total += v.(int)
		return false
	})
	if total != s.Len() {
		return fmt.Errorf("owner counts sum to %d, tree has %d nodes", total, s.Len())
	}
	return nil
}
