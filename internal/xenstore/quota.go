package xenstore

import (
	"fmt"
	"strconv"
	"strings"
)

// Quota holds the per-domain limits of C xenstored (4.17 defaults). They
// apply to unprivileged domains only, as in Xen; the connection limits
// that bound the agent's memory apply to every connection.
type Quota struct {
	// Replicated limits, checked when a change is applied to the tree.

	MaxNodes    int // nodes a domain may own (quota-nb-entry-per-domain)
	MaxNodeSize int // bytes of one node record: value, child names, permissions
	MaxPerms    int // entries of one permission list
	MaxPathLen  int // bytes of a path below the domain's home (path-max)

	// Connection limits, checked by the agent that serves the connection.

	MaxWatches      int // watches a domain may hold
	MaxTransactions int // open transactions of a connection
	MaxTxNodes      int // nodes one transaction may touch

	// Limits that bound memory for every connection, privileged or not.

	MaxOutstanding  int // replies queued and not yet read by the client; reading stops beyond
	MaxQueuedEvents int // watch events queued for a connection; later ones are dropped
	MaxConnWatches  int // watches of one connection
	MaxConnTx       int // open transactions of one connection
}

// DefaultQuota returns C xenstored's defaults.
func DefaultQuota() Quota {
	return Quota{
		MaxNodes:        1000,
		MaxNodeSize:     2048,
		MaxPerms:        5,
		MaxPathLen:      2048,
		MaxWatches:      128,
		MaxTransactions: 10,
		MaxTxNodes:      1024,
		MaxOutstanding:  20,
		MaxQueuedEvents: 1024,
		MaxConnWatches:  4096,
		MaxConnTx:       256,
	}
}

// nodeRecordSize is the size C xenstored stores for a node: a 24-byte
// header, 8 bytes per permission, the value and the NUL-terminated child
// names. The node-size quota is checked against it.
func nodeRecordSize(n *Node) int {
	s := 24 + 8*len(n.Perms) + len(n.Value)
	for _, c := range n.Children {
		s += len(c) + 1
	}
	return s
}

// quotaFields names each limit as "xenstore-control quota" and the
// agent's -quota flag spell it.
func (q *Quota) fields() []struct {
	name string
	v    *int
} {
	return []struct {
		name string
		v    *int
	}{
		{"nodes", &q.MaxNodes},
		{"node-size", &q.MaxNodeSize},
		{"permissions", &q.MaxPerms},
		{"path-max", &q.MaxPathLen},
		{"watches", &q.MaxWatches},
		{"transactions", &q.MaxTransactions},
		{"transaction-nodes", &q.MaxTxNodes},
		{"outstanding", &q.MaxOutstanding},
		{"watch-events", &q.MaxQueuedEvents},
		{"conn-watches", &q.MaxConnWatches},
		{"conn-transactions", &q.MaxConnTx},
	}
}

// Set changes the limit called name; values must be positive.
func (q *Quota) Set(name string, v int) error {
	if v <= 0 || v > 1<<30 {
		return fmt.Errorf("quota %s: %d out of range", name, v)
	}
	for _, f := range q.fields() {
		if f.name == name {
			*f.v = v
			return nil
		}
	}
	return fmt.Errorf("unknown quota %q (have: %s)", name, strings.Join(q.Names(), ", "))
}

// Diff lists the limits where o differs from q, as name and o's value.
func (q Quota) Diff(o Quota) map[string]int {
	out := map[string]int{}
	of := o.fields()
	for i, f := range q.fields() {
		if *f.v != *of[i].v {
			out[f.name] = *of[i].v
		}
	}
	return out
}

// Names lists the quota names.
func (q *Quota) Names() []string {
	var out []string
	for _, f := range q.fields() {
		out = append(out, f.name)
	}
	return out
}

// String renders the limits one per line, "name value".
func (q Quota) String() string {
	var b strings.Builder
	for _, f := range q.fields() {
		fmt.Fprintf(&b, "%s %d\n", f.name, *f.v)
	}
	return b.String()
}

// ParseQuota applies "name=value,name=value" to q.
func ParseQuota(q *Quota, s string) error {
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return fmt.Errorf("quota %q: want name=number", kv)
		}
		if err := q.Set(k, n); err != nil {
			return err
		}
	}
	return nil
}
