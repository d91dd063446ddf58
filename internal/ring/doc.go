// Package ring implements the index arithmetic of Xen's shared rings over a
// plain []byte, so that it works the same on an mmap'ed page and on
// make([]byte, n) in a test.
//
// Two kinds of ring are covered:
//
//   - io/ring.h request/response rings (Front, Back): a 64-byte header of
//     free-running u32 indices followed by fixed-size entries, with Xen's
//     event-index notification scheme (PushRequests, FinalCheckForRequests
//     and their response twins);
//   - byte-stream rings (Stream) as used by the PV console and libxenvchan:
//     a power-of-two data area and a producer/consumer index pair.
//
// Shared indices are read and written with sync/atomic, whose sequential
// consistency provides the write, read and full barriers io/ring.h asks for.
// Entry and data bytes are plain memory: a producer writes them before it
// publishes its index, a consumer reads them after it loads the peer's
// index, and a consumer must copy anything it validates, because the peer
// can change shared bytes at any time.
//
// Every index read from shared memory is checked: a peer that claims more
// than the ring can hold gets ErrOverflow (or ErrCorrupt for streams)
// instead of making us read stale slots. The only unsafe code is the word
// access in atomic_unsafe.go; it assumes a little-endian host, as the
// wire layouts do.
package ring
