package clustertest

import (
	"fmt"
	"slices"
	"strings"
	"sync"

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
// while others write, and keeps many requests in flight (the client
// pipelines them) so that large trees dump quickly.
func Dump(x *xs.Client, root string) (map[string]Node, error) {
	t, err := x.TransactionStart()
	if err != nil {
		return nil, fmt.Errorf("dump: transaction start: %w", err)
	}
	defer t.Abort()
	d := &dumper{s: t, out: map[string]Node{}, sem: make(chan struct{}, 32)}
	d.wg.Add(1)
	d.walk(root)
	d.wg.Wait()
	if d.err != nil {
		return nil, d.err
	}
	return d.out, nil
}

type dumper struct {
	s   xs.Store
	sem chan struct{} // bounds the nodes read at once
	wg  sync.WaitGroup

	// mu guards out and err.
	mu  sync.Mutex
	out map[string]Node
	err error
}

// walk reads path and starts walking its children.
func (d *dumper) walk(path string) {
	defer d.wg.Done()
	d.sem <- struct{}{}
	n, kids, err := d.node(path)
	<-d.sem
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if d.err == nil {
			d.err = err
		}
		return
	}
	d.out[path] = n
	for _, k := range kids {
		child := path + "/" + k
		if path == "/" {
			child = "/" + k
		}
		d.wg.Add(1)
		go d.walk(child)
	}
}

func (d *dumper) node(path string) (Node, []string, error) {
	v, err := d.s.Read(path)
	if err != nil {
		return Node{}, nil, fmt.Errorf("dump: read %s: %w", path, err)
	}
	perms, err := d.s.GetPerms(path)
	if err != nil {
		return Node{}, nil, fmt.Errorf("dump: get perms %s: %w", path, err)
	}
	ps := make([]string, len(perms))
	for i, p := range perms {
		ps[i] = p.String()
	}
	kids, err := d.s.Directory(path)
	if err != nil {
		return Node{}, nil, fmt.Errorf("dump: directory %s: %w", path, err)
	}
	return Node{Value: string(v), Perms: strings.Join(ps, " ")}, kids, nil
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
