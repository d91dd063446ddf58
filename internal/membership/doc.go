// Package membership tells each host who is in the cluster, whether they
// are alive, and what they offer (Meta: addresses, CPUs, memory, version).
// It wraps hashicorp/memberlist (SWIM with Lifeguard) and is the only
// package that imports it: callers see our Member, Meta and Event types.
//
// On top of memberlist it adds what the cluster needs and memberlist
// leaves out:
//
//   - Merging after a partition. Memberlist forgets a dead member after
//     GossipToTheDeadTime, so two halves apart longer than that never talk
//     again. A reconnect loop (as in Serf) keeps joining the addresses of
//     members lost in the last ReconnectTimeout, and any seed (Config.Join)
//     that is not a live member, with per-address exponential backoff.
//   - A host that comes back under its name at a new address. Memberlist
//     refuses such an address change unless the old entry has been dead
//     for DeadNodeReclaimTime, which is 0 ("never") by default there; we
//     always set it, and when the refusal happens (a conflict) we schedule
//     a join to the new address for when it may be taken back.
//   - Failed versus left. Memberlist reports both as a "leave". Leave sets
//     a flag in our meta before leaving, so peers emit EventLeft for a
//     graceful leave and EventFailed for a failure; on EventFailed the
//     agent marks that host's domains dead.
//   - Tests can put faultnet between memberlist and the network
//     (Config.Faults): delay, datagram loss and cut links.
//
// Goroutines, besides memberlist's own: the event pump (delivers queued
// events to Events in order), the reconnect loop, and with Faults two
// forwarders in the transport wrapper.
//
// Lock order: memberlist's node lock, then Membership.mu (memberlist calls
// our delegates under its lock), then eventQueue.mu. Never call into
// memberlist while holding Membership.mu.
package membership
