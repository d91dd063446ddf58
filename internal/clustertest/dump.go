package clustertest

import (
	"fmt"
	"slices"
	"strings"

	"shi/guest/xs"
)

// Node is one XenStore node in a dump: its value and its permission list
// as Xen writes it ("b0 r5").
type Node struct {
	Value string
	Perms string
}

// Dump walks the tree under root and returns every node by path. It reads
// through one read-only transaction, so the dump is one snapshot even
// while others write.
func Dump(x *xs.Client, root string) (map[string]Node, error) {
	t, err := x.TransactionStart()
	if err != nil {
		return nil, fmt.Errorf("dump: transaction start: %w", err)
	}
	defer t.Abort()
	out := map[string]Node{}
	if err := walk(t, root, out); err != nil {
		return nil, err
	}
	return out, nil
}

func walk(s xs.Store, path string, out map[string]Node) error {
	v, err := s.Read(path)
	if err != nil {
		return fmt.Errorf("dump: read %s: %w", path, err)
	}
	perms, err := s.GetPerms(path)
	if err != nil {
		return fmt.Errorf("dump: get perms %s: %w", path, err)
	}
	ps := make([]string, len(perms))
	for i, p := range perms {
		ps[i] = p.String()
	}
	out[path] = Node{Value: string(v), Perms: strings.Join(ps, " ")}
	kids, err := s.Directory(path)
	if err != nil {
		return fmt.Errorf("dump: directory %s: %w", path, err)
	}
	slices.Sort(kids)
	for _, k := range kids {
		child := path + "/" + k
		if path == "/" {
			child = "/" + k
		}
		if err := walk(s, child, out); err != nil {
			return err
		}
	}
	return nil
}

// DiffDumps describes how b differs from a, one line per node, sorted; ""
// when they are equal.
func DiffDumps(a, b map[string]Node) string {
	var lines []string
	for p, n := range a {
		m, ok := b[p]
		switch {
		case !ok:
			lines = append(lines, fmt.Sprintf("- %s = %q (%s)", p, n.Value, n.Perms))
		case m != n:
			lines = append(lines, fmt.Sprintf("~ %s = %q (%s) -> %q (%s)", p, n.Value, n.Perms, m.Value, m.Perms))
		}
	}
	for p, m := range b {
		if _, ok := a[p]; !ok {
			lines = append(lines, fmt.Sprintf("+ %s = %q (%s)", p, m.Value, m.Perms))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
