// Package shm is the only place in shi that makes memory and descriptors
// cross process boundaries: memfd pages and their mmap, eventfd doorbells,
// epoll sets, and Unix-socket messages that carry descriptors with
// SCM_RIGHTS. Everything else (rings, grant logic, port tables) works on
// plain []byte and ints handed out from here.
//
// Safety rules kept here, because every caller needs them:
//
//   - A memfd page is sealed against shrinking and growing as soon as it
//     is made (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL): a process holding it
//     cannot truncate it under another's mapping, which would turn the
//     other's next access into SIGBUS. Descriptors received from a domain
//     are checked with VerifyMemfd before anyone maps them.
//   - A page is shared as its own memfd, never as a window on a larger
//     file, so a descriptor grants exactly one page.
//   - RecvMsg accepts at most the number of descriptors the caller
//     expects and closes any others, so a peer cannot exhaust our
//     descriptor table.
//
// The benchmark helpers (EventFDPingPong, UnixStreamThroughput) re-execute
// the running binary as their second process: a program that calls them
// must call RunChild first thing in main (tests: in TestMain).
package shm
