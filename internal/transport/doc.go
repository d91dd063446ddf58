// Package transport is the agent-to-agent data plane: typed control
// messages between the agents of a cluster, and raw TCP links that agents
// hand to domain processes.
//
// A Mesh is one host's end. Send queues a Msg for another host and never
// blocks; Config.Handle receives the messages other hosts send. DialLink
// opens a link (a TCP connection of its own, with a hello the acceptor's
// Config.Link accepts or refuses), and LinkFile turns a link into a file
// descriptor for a domain process. Hosts are named; Config.Resolve maps a
// name to its data address, from membership.
//
// # Connections
//
// Each host dials the others lazily and sends over its own outbound
// connection; it reads what others send on connections it accepted. A
// connection thus carries frames one way only, which keeps ordering
// simple: one writer, one reader. Every connection, control or link,
// starts with the handshake described in handshake.go: a preface, the
// connection kind and the dialer's name, then HMAC-SHA256 proofs over
// fresh nonces when the cluster has a key. A wrong key is refused on both
// ends (ErrAuth for a dialer, a log line and Stats.AuthFailures for an
// acceptor). A malformed handshake or frame closes that connection with a
// log line naming the peer; the Reader never allocates or waits for more
// than one frame's worth.
//
// # Guarantees
//
// Messages from one host are handled in the order that host sent them,
// one at a time. Send only queues: a frame written to a connection that
// then breaks may be lost, and so may a whole batch whose write failed;
// the writer reconnects with backoff (20 ms doubling to 1 s) while frames
// are queued, and frames sent after that arrive, in order. A host's queue
// holds up to 64 MiB (not counting the batch being written); beyond that
// Send returns ErrQueueFull. A host that stays unreachable for 30 s with
// frames queued has them dropped, and Forget drops them at once. The hypervisor treats a host that stays unreachable as
// dead, via membership, so lost frames never leave it waiting. Frames of
// an older connection from a host are never handled after frames of a
// newer one: lost at a reconnect, perhaps, but not reordered.
//
// # Goroutines
//
//   - the accept loop, one per Mesh, until Close;
//   - per accepted connection, one goroutine: the handshake, then either
//     the frame reader that calls Handle, or the link's hello and the call
//     of Link;
//   - per destination host, a writer that dials, reconnects and writes
//     batches (everything queued goes out in one vectored write through
//     net.Buffers, so many small frames share a syscall), from the first
//     Send until Forget or Close;
//   - per outbound control connection, a watcher blocked in Read, which
//     returns only when the connection ends (the acceptor sends nothing
//     after the handshake), so the writer learns of it before writing;
//   - per LinkFile relay (only with faults, or a non-TCP stream), two
//     copiers, until either side closes or Close.
//
// # Locks
//
// Lock order, outermost first:
//
//	inHost.deliverMu   held across Handle; serialises one host's deliveries
//	Mesh.mu            peers, inbound, conns, relays, closed
//	peer.mu            one host's queue and current connection
//
// Mesh.mu and peer.mu are never held across I/O, a callback or a wait, so
// Send never blocks and Handle may call Send.
//
// # Frames
//
// A control message (Msg) travels as one frame: a little-endian u32 giving
// the length of the rest, then a fixed 56-byte header, then Data (at most
// MaxData bytes). All integers are little-endian.
//
//	offset  size  field
//	     0     1  Kind
//	     1     1  reserved, zero
//	     2     2  Flags
//	     4     4  Errno
//	     8     8  ID
//	    16     2  Status (int16)
//	    18     2  FromDom
//	    20     2  ToDom
//	    22     2  reserved, zero
//	    24     4  FromPort
//	    28     4  ToPort
//	    32     4  Ref
//	    36     4  Frame
//	    40    16  Arg[0..3], 4 bytes each
//	    56     n  Data
//
// The codec (AppendFrame, DecodeFrame, Reader) is pure and fuzzed: it
// checks sizes and reserved bytes only. Kinds it does not know still
// decode, so that a newer agent's message reaches the handler, which
// refuses it, rather than ending the connection.
package transport
