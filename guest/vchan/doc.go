// Package vchan is libxenvchan's byte streams for shi domains, on one
// host or across hosts, byte-compatible with Xen's libxenvchan 4.17
// (spec/xen-abi.md §7): a C libxenvchan peer sees a libxenvchan peer.
//
// A server (Listen) shares a control page with its peer domain: a
// 24-byte header of ring indices, ring orders, live bytes and notify
// bytes, then the grant refs of rings that live in pages of their own.
// The left ring carries what the client writes, the right one what the
// server writes; each is 1024 or 2048 bytes inside the control page
// (orders 10 and 11) or 2^(order-12) granted pages (orders 12..20), and
// the server chooses as libxenvchan_server_init does (Orders). It then
// publishes <path>/ring-ref and <path>/event-channel in XenStore, owned
// by itself and readable by the peer only, and removes <path> on Close.
// A client (Dial) reads those nodes, binds the port, maps the control
// page, checks everything it reads there before trusting it
// (DecodePage), maps the rings and says it is connected.
//
// Listen returns the server's end at once, as libxenvchan does: there is
// no Accept, and one client per vchan. Read waits for the client's data
// and Write may fill the ring before the client comes; WaitClient waits
// for the client itself.
//
// A Conn is a net.Conn. Read returns what is in the ring (copied
// straight into the caller's buffer), waiting while it is empty; Write
// copies all of its buffer in, waiting while the ring is full. Waiting
// is libxenvchan's lazy notification: an end asks for an event (a bit in
// the peer's notify byte) only before it sleeps, and sends one only when
// the peer asked. Read returns io.EOF once the peer has closed or died
// and what it wrote is read: its live byte is cleared by its Close or,
// if it died, by the unmap notification, and its port reports PeerGone.
// Write then fails with ErrPeerGone. Deadlines work as in package net
// (the error is os.ErrDeadlineExceeded); Close interrupts a blocked Read
// or Write, which returns net.ErrClosed.
//
// Across hosts (DESIGN.md §3) each end has its own copy of the pages:
// every check of the indices acquires first, data and indices are read
// under evtchn.Handle.View, and every write to shared memory is reported
// (Explicit, Wrote), so a release ships exactly what changed. A Write
// releases its data even when the reader did not ask for an event; a
// Read releases its consumer index once an eighth of the ring is free,
// or with the event a waiting writer asked for.
//
// Locks: Read holds rmu, Write wmu, Close both (rmu before wmu); mu is
// taken inside either, never the other way round, and never across a
// call into evtchn that blocks.
package vchan
