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
// # Remote peers
//
// The tables already describe peers on other hosts (evtchn.Endpoint.Host,
// Forward actions). A Connect to a remote peer is sent without a doorbell
// (hypercall.FlagRemote), so the guest library sends through
// OpEvtchnSend, and Forward actions go to Config.Remote. The next step
// (DESIGN.md §3) implements Remote and a remote page source behind the
// same requests; the guest library does not change.
//
// # Concurrency
//
// One goroutine per domain reads its requests; one writes its replies and
// notifications when they cannot be sent at once. Every request runs under
// Hypervisor.mu, which guards the tables and all per-domain state. Lock
// order: Hypervisor.mu, then outbox.mu. Nothing blocks under either lock:
// sends to a domain are non-blocking, and a domain whose queue of unsent
// messages grows past maxQueued is disconnected.
//
// # Hostile domains
//
// Everything a domain sends is untrusted. A malformed message, a request
// with unexpected descriptors, a descriptor that is not a sealed one-page
// memfd, or an operation the tables refuse gets an error reply and a log
// line naming the domain (rate-limited per domain); the agent and other
// domains carry on.
package hypervisor
