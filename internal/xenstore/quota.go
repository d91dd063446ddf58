package xenstore

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
