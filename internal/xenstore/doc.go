// Package xenstore is the pure core of shi's XenStore: the tree, its
// permissions and quotas, transactions and watches, with Xen 4.17's
// semantics and error names (spec/xen-abi.md §1). It has no goroutines,
// sockets or clocks: a request goes in, and the replies, watch events and
// at most one Command to replicate come out.
//
// # State and commands
//
// A State is one immutable version of the store (a persistent radix tree
// of Nodes plus per-domain node counts, introduced domains, SET_TARGET
// links and the quota). State.Apply(Command) returns a new State and a
// Result (errno and events) and is deterministic: the directory replicates
// Commands through Raft and every replica applies them alike. Commands are
// encoded with MarshalBinary for the log; States with WriteTo for Raft
// snapshots.
//
// # Connections and the Engine
//
// An Engine is one replica's clients: connections (each acting as a
// domain; domain 0 is privileged), their transactions and their watches.
// Engine.Request handles reads and transaction-local changes at once and
// turns other changes into a Command; after the Command is applied,
// Engine.Applied installs the new State and returns the watch events, and
// CompleteReply builds the reply. Engine.Handle does all three for a store
// that is not replicated.
//
// # Transactions
//
// A transaction reads one snapshot, taken at TRANSACTION_START, plus its
// own changes, which nobody else sees before commit. It records what it
// observed of each node (existence, value, permissions, child list);
// commit replays its changes on the current tree if none of those facets
// changed, else fails with EAGAIN. So two transactions that create
// different children of one parent do not conflict (C xenstored would make
// them), one that listed the parent does, and read-only transactions never
// conflict: their snapshot is consistent by construction.
//
// # Watch events: what fires, and in what order
//
// Each modifying request fires one event with its path (implicitly created
// ancestors fire none; a watch on an ancestor still matches). Removing a
// subtree fires, deepest first, each removed descendant for watches on
// exactly that node, then the removed node for watches on it and its
// ancestors. Events of a transaction fire at commit, in the order of its
// requests. A connection receives the events of one applied command in
// order, and commands' events in the order the commands were applied, which
// is the log order on every replica. A connection's own change fires its
// matching watches before its reply is sent. XS_WATCH fires once at once,
// after its reply. Unprivileged watchers get an event only if they could
// read the node (before or after a permission change) or its parent.
package xenstore
