// Package directory is the cluster's replicated, consistent state: the
// XenStore tree and the domain table, kept by Raft (hashicorp/raft with a
// log store on bbolt, logstore.go). It is the only package that imports raft.
//
// fsm.go is the pure state machine: log entries (a type byte, then a
// XenStore command or a domain-table command) applied in order; no clock,
// no I/O. replica.go joins it to one host's XenStore clients: applying an
// entry delivers its watch events to that host's watchers. backend.go
// serves the XenStore socket from a replica, committing changes through a
// Committer: Local (one host, -dev) or Cluster (Raft; followers forward to
// the leader's API).
//
// Consistency: every change is linearizable (it goes through the leader's
// log) and is answered once committed; a read on a host first waits until
// the host has applied every change it acknowledged, so its clients read
// what it acknowledged (read-your-writes, across connections of one host).
// Reads are served from the local replica
// unless the agent runs with -consistent-reads, which makes each read wait
// for a read index from the leader (linearizable). A host cut off from the
// majority cannot commit: changes fail with EROFS after the commit timeout
// (5 s by default), an entry whose fate is unknown gets EIO, and reads go
// on from the local replica (with -consistent-reads they fail with EAGAIN).
//
// Restarts: raft keeps no commit index on disk, so each host keeps its own
// applied mark (mark.go), raised before a batch is applied. A restarted
// node applies its own log again up to the mark before NewNode returns
// (no quorum needed), and the backend answers nothing until the replica
// has reached it (Replica.CaughtUp): a client never sees the tree go back.
//
// Voters (voters.go, pure): the first -bootstrap-expect hosts bootstrap the
// cluster; later hosts join as non-voters; the leader removes a voter that
// membership has seen dead longer than the grace period and promotes a
// live non-voter.
package directory
