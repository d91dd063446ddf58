// Package blkfront is the front end of a Xen virtual block device
// (spec/xen-abi.md §6, io/blkif.h) for a shi domain: the guest side of
// the disks a domain's config names, served by a blkif back end in a
// driver domain of this host or of another (internal/devices/blkback).
//
// Open does Linux blkfront's xenbus handshake through XenStore: it
// waits for the back end's InitWait, grants the ring (one page, or
// 2^ring-page-order where the back end offers max-ring-page-order),
// binds an unbound event channel to the back end's domain, writes
// ring-ref, event-channel, protocol "x86_64-abi" and feature-persistent,
// goes to Initialised, waits for Connected and reads sectors,
// sector-size, info and the feature keys. A Disk is then an
// io.ReaderAt and io.WriterAt (and an nbd.Backend) safe for concurrent
// use, with as many requests in flight as the ring holds.
//
// Data moves through a pool of pages granted once to the back end
// (persistent grants, as feature-persistent means): a request takes
// pages from the pool, a write copies into them, a read copies out of
// them once answered. A request of more than 11 pages uses indirect
// descriptors (BLKIF_OP_INDIRECT) when the back end offers
// feature-max-indirect-segments; larger I/O is split into requests that
// are all in flight at once. Flush is BLKIF_OP_FLUSH_DISKCACHE, FUA a
// write then a flush, Discard BLKIF_OP_DISCARD.
//
// Concurrency. Submitters reserve a request id (its slot, with a
// generation so a replayed response names nothing) and pool pages
// under Disk.mu, waiting on Disk.cond while there are none; fill the
// pages without the lock; then produce the ring entry and push. Pushes
// are batched: the first submitter to push keeps pushing what others
// produced meanwhile, and notifies only if the back end's req_event
// asks for it (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY). One goroutine, the
// completer, consumes responses: it spins for SpinFor while requests
// are in flight, then sets rsp_event (RING_FINAL_CHECK_FOR_RESPONSES)
// and sleeps on the event channel; it copies reads out, returns pages,
// and answers each caller on its request's channel. A second goroutine
// watches the back end's state key. Lock order: Disk.mu, then the
// library's evtchn and link locks.
//
// Across hosts the memory model of docs/memory-model.md applies: the
// ring and the pool are declared Explicit and every write to them is
// reported (request slots, req_prod, rsp_event, a write's data, indirect
// descriptors), so a release ships only those bytes; responses and
// their indices are read under evtchn.Handle.View.
//
// A hostile or dying back end never hangs or crashes the front end: a
// response that names a request it was not given, with the wrong
// operation, or an index past the requests pushed fails the disk with
// ErrProtocol; a status other than OKAY fails that request; when the
// back end's domain or host goes (its port closes), or it closes the
// disk or its directory is removed, every request in flight and every
// later one fails with ErrBackendGone. All of these wrap syscall.EIO.
package blkfront
