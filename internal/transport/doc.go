// Package transport is the agent-to-agent data plane: typed control
// messages between the agents of a cluster, and raw TCP links that agents
// hand to domain processes.
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
