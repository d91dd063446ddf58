// Package domain runs domains on this host: it parses their xl-style
// configs, places them on a host (a pure policy, place.go), starts each as
// an OS process in its own session with its agent connection and grant
// table handed over, writes the keys a Xen toolstack writes, and when a
// domain exits or is destroyed releases everything it held in the
// hypervisor (which the agent builds and hands over) and removes it from
// the directory, which fires @releaseDomain.
//
// Lock order: Manager.mu, then hypervisor.Hypervisor's locks. Manager.mu
// is never held while committing to the directory.
package domain
