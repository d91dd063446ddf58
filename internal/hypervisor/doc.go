// Package hypervisor is the hypervisor half of a shi host: the agent's side of the
// hypercalls its domains make (internal/hypercall). It owns the host's
// event-channel port table (internal/evtchn) and grant table
// (internal/gnttab), the eventfd behind every port and the memfd behind
// every shared page, serves each domain's SOCK_SEQPACKET connection, and
// carries out the tables' actions: an eventfd handed over with SCM_RIGHTS,
// a page's memfd passed to the domain that maps it, a notification to a
// peer.
//
// # Data paths
//
// A send between two local domains never reaches the agent: the sender
// holds the peer port's eventfd (its doorbell) and writes it. A grant
// mapped by a local domain is the granter's page itself: the page's own
// one-page memfd, read-only when the map is. Only the control operations
// (bind, close, map, unmap, copy) are requests here.
//
// # Other hosts
//
// A domain of another host is found through Config.Locate (the directory's
// domain table) and reached through Config.Peers, the data plane: the
// hypervisors of two hosts speak a typed peer protocol (remote.go) of
// internal/transport messages, and every message from another host enters
// through Inbound. A bind to a port of another host's domain is
// two-phase (reserve, ask, complete or roll back); a map pins the grant on
// the granter's host, per mapping host; copies are done by the granter's
// host. Before a bind or map crosses hosts the two hypervisors set up a
// link between the two domains (links.go), which their libraries then
// speak on directly: events and the page updates of the memory model
// (docs/memory-model.md). HostDown and DomainGone drop what a vanished
// host or domain left.
//
// # Concurrency
//
// One goroutine per domain reads its requests; one writes its replies and
// notifications when they cannot be sent at once. Every request runs under
// Hypervisor.mu, which guards the tables, all per-domain state, the links
// and the requests waiting for other hosts. Lock order: Hypervisor.mu,
// then outbox.mu; the Locator (the directory's replica lock) is called
// under Hypervisor.mu and never calls back. Nothing blocks under either
// lock: sends to a domain and to other hosts are queued, a request that
// needs another host gets its reply later (the domain's other requests go
// on meanwhile), links are dialled from a goroutine of their own, and a
// domain whose queue of unsent messages grows past maxQueued is
// disconnected.
//
// # Hostile domains
//
// Everything a domain sends is untrusted. A malformed message, a request
// with unexpected descriptors, a descriptor that is not a sealed one-page
// memfd, or an operation the tables refuse gets an error reply and a log
// line naming the domain (rate-limited per domain); the agent and other
// domains carry on.
package hypervisor
