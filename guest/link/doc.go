// Package link is a domain's side of shi's cross-host data plane: the
// links its agent hands it to domains of other hosts, the events it sends
// on them, and the memory model of DESIGN.md §3 that keeps the pages it
// shares with those domains coherent. guest/evtchn and guest/gnttab use
// it; a domain program never needs to.
//
// # Links
//
// A link is a stream (a connected socket the two agents set up) between
// this domain and one domain of another host. Both libraries write frames
// on it directly (frame.go): events, page updates, a page's first
// content, and an unmap's fence. Nothing relays them, so an event across
// hosts costs one write and one read, and frames arrive in the order they
// were written: the page updates a send releases always arrive before its
// event.
//
// # The memory model: lazy release consistency
//
// Each side of a page shared across hosts has its own copy: the granter
// its page, the mapper a replica. A page shared with a peer is a rel
// (relation): in diff mode it keeps a twin, a copy of what the peer last
// saw; in explicit mode (Explicit) its writer reports every write with
// Wrote and the rel keeps a bitmap of unshipped bytes instead.
//
//   - Release (Send, Release, ReleaseAll): the bytes that differ from the
//     twin (or are marked) are shipped as exact byte runs and the twin
//     updated. Send releases the pages shared with the event's peer and
//     then writes the event, so no event overtakes its data. A thread
//     about to block in evtchn's Wait releases to every peer first.
//   - Acquire: every frame that has arrived is applied, in the calling
//     thread, under the State's lock, before the library call returns:
//     evtchn calls it on every entry, and the ring code before it reads
//     indices. A reader therefore never sees an event before its data,
//     nor a half-applied update — unless it reads shared memory from
//     another thread while an acquire applies one (a data race, as on any
//     release-consistent memory).
//   - Liveness: updates that arrive make every port bound to their sender
//     pending, so a domain blocked in Wait re-checks the shared indices;
//     Xen protocols treat events as hints. A background goroutine
//     (FlushInterval) ships changes that stay stable between two reads
//     (a peer's diff-mode pages all together, from one snapshot), for
//     programs that block outside the library (C callers in select()
//     on the event fd), and drains links nobody reads into per-page
//     pending updates that the next acquire applies.
//   - Both sides may write different bytes of one page (a ring's producer
//     and consumer indices): runs are exact to the byte, applied to the
//     page and to the twin of the link they came from, so they are never
//     echoed back and never overwrite a byte the other side changed. Both
//     sides writing the same byte without an event between is a race, as
//     on any release-consistent memory; the protocols that do it (vchan's
//     notify bits, a pipe's wait flags) recover because the writer of a
//     request releases it before it blocks, and its arrival raises events.
//
// # Maps of another host's grants
//
// The mapper's library creates the replica before it asks its agent,
// under a generation number; the granter's agent pins the grant and tells
// the granter's library, which twins the page and sends its first content
// (framePage). The map completes when it arrives. On the last unmap the
// mapper releases its final writes and sends a fence; the granter applies
// them, drops the rel, and asks its agent to unpin, so the grant can end
// only after every byte the mapper wrote is in the granter's page.
//
// # Locks
//
// State.mu guards the tables, the rels, each link's input buffer and
// output queue. A link's wmu serialises writes to its socket; it is
// taken before State.mu (to take the queue) and never while holding it,
// so a writer blocked on a full socket never stops the acquire or the
// drain that would let its peer make progress. Nothing under State.mu
// blocks or calls the agent.
package link
