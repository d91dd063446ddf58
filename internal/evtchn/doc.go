// Package evtchn is the event-channel port table of one host: which ports
// every local domain has, in which state, bound to whom. It implements the
// binding rules of Xen's EVTCHNOP_* (spec/xen-abi.md §2) as a pure data
// structure, with no syscalls, goroutines or clocks.
//
// The pending and mask bits are not here. Each bound port is backed by an
// eventfd that its domain reads (pending = counter non-zero) and the guest
// library masks and unmasks ports in its epoll set; a send between two
// local domains is a write to the peer's eventfd that never reaches the
// agent. What the table decides is who holds which eventfd, so every
// operation returns Actions that the agent carries out in order:
//
//	Open        create the eventfd behind dom:port and hand it to dom
//	Connect     give dom the doorbell of its peer, where its sends go
//	Kick        make dom:port pending (write 1 to its eventfd)
//	Disconnect  tell dom that port is unbound again: drop the doorbell
//	Release     dom:port is closed: drop the agent's copy of its eventfd
//	Forward     send a message to the agent of another host
//
// A peer on another host is an Endpoint with a non-empty Host. The table
// routes sends and closes to it with Forward, and the cross-host bind is a
// two-phase handshake (remote.go): ReserveRemote on the binder's host,
// AcceptRemoteBind on the host of the unbound port, then CompleteRemote or
// AbortRemote. DropDomain and DropHost unbind what a vanished remote
// domain or host leaves behind. Remote peers plug in without changing the
// local paths.
//
// A Table is not safe for concurrent use; the agent serialises calls.
package evtchn
