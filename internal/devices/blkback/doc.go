// Package blkback is the back end of Xen virtual block devices (blkif,
// spec/xen-abi.md §6) for a shi driver domain: Service watches the
// driver's back-end directory (/local/domain/<driver>/backend/vbd/<fe>/<devid>),
// which the toolstack writes (internal/devices/blkif/toolstack.Keys), opens each
// disk's image file, and serves the front end's ring.
//
// The handshake is xenbus's: the back end opens the image (flock'ed, so
// a file is never served writable to two front ends), publishes its
// features and goes to InitWait (2); once the front end is Initialised
// (3) it maps the ring and binds the event channel, publishes the disk's
// size and goes to Connected (4). A failure is written for a person to
// the back-end directory's error key, with state Closed (6). When the
// front end closes (5 or 6), its domain dies or its directory goes, the
// back end lets requests in flight finish, flushes the store, closes the
// file (releasing its lock) and only then writes Closed, as Linux blkback
// does, so that a front end that saw Closed may hand the image on. The
// same happens when the toolstack removes the back-end directory. A front
// end that returns to Initialising (1) gets a new session; a disk that
// could not be opened (its image in use, or missing) is retried, less
// and less often, while its front end waits in Initialising. An image
// held by a session whose domain is gone (destroyed a moment ago; its
// session still flushes and closes) is opened once that session lets
// go, not refused: the directory already let the new domain have it.
//
// One goroutine per connected disk consumes the ring: it does reads and
// writes itself and pushes their responses once per pass over the ring
// (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: an event only if the front end
// asked for one), then spins briefly before it sleeps on the event
// channel. Flushes and discards run on goroutines of their own, so an
// fsync never holds reads up; their responses join the next push.
//
// Requests are copied out of the ring and validated by Parse, a pure
// function fuzzed in fuzz_test.go: a malformed request is answered
// BLKIF_RSP_ERROR (or EOPNOTSUPP), never acted on. Data pages are the
// front end's grants, mapped on first use and kept while the front end
// offers feature-persistent (as Linux blkback does); reads go straight
// from the store into the mapped page. FLUSH_DISKCACHE is answered only
// after the store's Flush (fdatasync) returned; a flush with segments
// writes them first.
//
// Built only on guest/ (DESIGN.md §2): the back end is a domain like any
// other, so a front end on another host works through the memory model
// of docs/memory-model.md. Every page the back end maps is declared
// Explicit and each write to it reported (responses, indices, read
// data), so a release ships exactly those bytes.
//
// CrashStore is a store that forgets unflushed writes on a simulated
// crash, to test that flushes reach stable storage.
package blkback
