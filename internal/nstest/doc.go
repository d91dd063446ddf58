// Package nstest builds test hosts: real network namespaces, one per host,
// each joined by a veth pair to a bridge that lives in a namespace of its
// own (the "switch"), so the root namespace is never touched. Tests start
// processes inside the hosts, kill or freeze them, and cut hosts off.
//
//	c := nstest.New(t, nstest.Options{Hosts: 3})
//	shi := nstest.BuildShi(t)
//	p, err := c.Host(0).Start(ctx, []string{shi, "agent", "-bind", c.Host(0).IP}, nil)
//	c.Cut(2)    // host 2's cable is pulled
//	c.Heal(2)
//	p.Freeze()  // SIGSTOP to its process group
//
// Host i has the address 10.77.0.(i+1)/24 on its eth0. Every cluster has
// its own switch, so clusters in parallel tests or test processes never
// see each other even though they use the same addresses.
//
// Names start with "shint-<pid>-<n>", unique per cluster; New first removes
// what a crashed earlier test process left behind (namespaces whose pid is
// gone, and the processes still in them). Everything else is removed in
// t.Cleanup, also when the test fails, and then each process's output is
// written to the test log.
//
// There is no netem on this kernel: delay and loss between hosts come from
// internal/faultnet inside the agents. `tc tbf` on a host's eth0 (via
// Host.Command) caps bandwidth.
//
// Test hosts need root; New skips the test when not root or with -short.
// scripts/testhosts.sh builds the same thing by hand, with prefix "shih-".
package nstest
