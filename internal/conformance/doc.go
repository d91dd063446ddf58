// Package conformance checks shi's XenStore against clients that nobody here
// wrote, run as real processes against a real `shi agent -dev`:
//
//   - Debian's xenstore-utils (xenstore-read, -write, -ls, -list, -exists,
//     -rm, -chmod, -watch), with XENSTORED_PATH pointing at the agent; every
//     step asserts stdout, stderr and the exit code, error cases included;
//   - Xen's own test suite, test-xenstore from xen-utils-4.17 (unpacked into
//     .cache/xen by scripts/deps.sh), every test with several iterations and
//     each test on its own so that a failure names it;
//   - `shi xenstore ...` on the same steps, which must print exactly what the
//     Xen tools print.
//
// The package holds only tests. They build ./cmd/shi once and start one
// agent for the package, whose socket is reached through a recording proxy:
// when a step fails, the test log shows the exact requests and replies that
// crossed the socket during it.
//
// A missing tool fails the test with "run scripts/deps.sh"; with -short the
// whole package is skipped (it runs real processes).
package conformance
