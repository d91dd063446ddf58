// Package clustertest runs real shi clusters for tests: one `shi agent`
// per test host (internal/nstest), each in its own network namespace with
// its data directory in the test's temporary directory, and the tests that
// check the directory across hosts — replication, watches, leader loss,
// partitions, restarts, linearizability (porcupine) and conformance of
// Xen's own clients against a follower.
//
//	c := clustertest.Start(t, clustertest.Options{Hosts: 3})
//	l := c.Leader(ctx)             // index of the host that leads
//	x := c.Host(1).XS()            // a guest/xs client of host 1's agent
//	c.Host(l).Kill()               // SIGKILL; Restart() brings it back on its data dir
//	c.Cut(2); c.Heal(2)            // pull and plug host 2's cable
//
// Agents run with -test-timing (fast failure detection and elections) and
// -test-faults (the transport fault hook, set with Host.SetFaults) unless
// Options say otherwise. Every helper polls; none sleeps a fixed time.
// The hosts' addresses exist only inside their namespaces, so the API
// client of each Host dials from inside its namespace; XenStore sockets
// are Unix sockets, reachable from anywhere.
//
// What the tests show about the directory's semantics: a host cut off
// from the majority refuses changes with EROFS within about two commit
// timeouts (a change in flight when the cable goes ends in EIO: its
// outcome is unknown) and keeps serving reads from its replica, or, with
// -consistent-reads, refuses them with EAGAIN; default reads are local
// and can be stale across connections (TestCluster3/local-reads logs how
// often), while each connection reads its own writes.
//
// The package is test-only: it imports testing and is never linked into
// the shi binary. Its tests need root (network namespaces) and are skipped
// with -short. The cluster benchmarks run only with SHI_BENCH_CLUSTER=1:
//
//	SHI_BENCH_CLUSTER=1 go test -run TestBenchCluster -v -timeout 20m ./internal/clustertest
//
// or scripts/bench-cluster.sh, which does the same.
package clustertest
