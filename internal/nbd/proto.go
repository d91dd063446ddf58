// Package nbd serves block exports over the Network Block Device protocol
// (fixed newstyle negotiation, simple and structured replies, base:allocation
// block status), as specified in NetworkBlockDevice/nbd doc/proto.md.
//
// The byte layouts and decoders here are pure; server.go owns the sockets.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic numbers and flags keep proto.md's spelling so grep finds both.
const (
	NBDMAGIC                   = 0x4e42444d41474943 // "NBDMAGIC"
	IHAVEOPT                   = 0x49484156454f5054 // "IHAVEOPT"
	NBD_OPTION_REPLY_MAGIC     = 0x0003e889045565a9
	NBD_REQUEST_MAGIC          = 0x25609513
	NBD_SIMPLE_REPLY_MAGIC     = 0x67446698
	NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	NBD_FLAG_FIXED_NEWSTYLE   = 1 << 0
	NBD_FLAG_NO_ZEROES        = 1 << 1
	NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
	NBD_FLAG_C_NO_ZEROES      = 1 << 1
)

// Transmission flags.
const (
	NBD_FLAG_HAS_FLAGS         = 1 << 0
	NBD_FLAG_READ_ONLY         = 1 << 1
	NBD_FLAG_SEND_FLUSH        = 1 << 2
	NBD_FLAG_SEND_FUA          = 1 << 3
	NBD_FLAG_ROTATIONAL        = 1 << 4
	NBD_FLAG_SEND_TRIM         = 1 << 5
	NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6
	NBD_FLAG_SEND_DF           = 1 << 7
	NBD_FLAG_CAN_MULTI_CONN    = 1 << 8
)

// Options.
const (
	NBD_OPT_EXPORT_NAME       = 1
	NBD_OPT_ABORT             = 2
	NBD_OPT_LIST              = 3
	NBD_OPT_STARTTLS          = 5
	NBD_OPT_INFO              = 6
	NBD_OPT_GO                = 7
	NBD_OPT_STRUCTURED_REPLY  = 8
	NBD_OPT_LIST_META_CONTEXT = 9
	NBD_OPT_SET_META_CONTEXT  = 10
)

// Option reply types.
const (
	NBD_REP_ACK          = 1
	NBD_REP_SERVER       = 2
	NBD_REP_INFO         = 3
	NBD_REP_META_CONTEXT = 4

	nbdRepErr                   = 1 << 31
	NBD_REP_ERR_UNSUP           = nbdRepErr | 1
	NBD_REP_ERR_POLICY          = nbdRepErr | 2
	NBD_REP_ERR_INVALID         = nbdRepErr | 3
	NBD_REP_ERR_PLATFORM        = nbdRepErr | 4
	NBD_REP_ERR_TLS_REQD        = nbdRepErr | 5
	NBD_REP_ERR_UNKNOWN         = nbdRepErr | 6
	NBD_REP_ERR_SHUTDOWN        = nbdRepErr | 7
	NBD_REP_ERR_BLOCK_SIZE_REQD = nbdRepErr | 8
	NBD_REP_ERR_TOO_BIG         = nbdRepErr | 9
)

// Information types in NBD_REP_INFO.
const (
	NBD_INFO_EXPORT      = 0
	NBD_INFO_NAME        = 1
	NBD_INFO_DESCRIPTION = 2
	NBD_INFO_BLOCK_SIZE  = 3
)

// Commands and command flags.
const (
	NBD_CMD_READ         = 0
	NBD_CMD_WRITE        = 1
	NBD_CMD_DISC         = 2
	NBD_CMD_FLUSH        = 3
	NBD_CMD_TRIM         = 4
	NBD_CMD_WRITE_ZEROES = 6
	NBD_CMD_BLOCK_STATUS = 7

	NBD_CMD_FLAG_FUA     = 1 << 0
	NBD_CMD_FLAG_NO_HOLE = 1 << 1
	NBD_CMD_FLAG_DF      = 1 << 2
	NBD_CMD_FLAG_REQ_ONE = 1 << 3
)

// Structured reply chunk types and flags.
const (
	NBD_REPLY_FLAG_DONE         = 1 << 0
	NBD_REPLY_TYPE_NONE         = 0
	NBD_REPLY_TYPE_OFFSET_DATA  = 1
	NBD_REPLY_TYPE_OFFSET_HOLE  = 2
	NBD_REPLY_TYPE_BLOCK_STATUS = 5
	NBD_REPLY_TYPE_ERROR        = 1<<15 | 1
)

// base:allocation status flags.
const (
	NBD_STATE_HOLE = 1 << 0
	NBD_STATE_ZERO = 1 << 1
)

// Errors on the wire (Linux errno values, as proto.md fixes them).
const (
	NBD_EPERM     = 1
	NBD_EIO       = 5
	NBD_ENOMEM    = 12
	NBD_EINVAL    = 22
	NBD_ENOSPC    = 28
	NBD_EOVERFLOW = 75
	NBD_ENOTSUP   = 95
	NBD_ESHUTDOWN = 108
)

// Limits applied to everything a client sends.
const (
	// MaxPayload bounds READ/WRITE lengths (and the advertised maximum block size).
	MaxPayload = 32 << 20
	// maxOptionLen bounds an option's data; names are at most 4096 bytes.
	maxOptionLen = 64 << 10
	// maxString is proto.md's bound on export names and context names.
	maxString = 4096
	// maxQueries bounds meta context queries in one option.
	maxQueries = 128
	// maxExtents bounds descriptors in one BLOCK_STATUS reply.
	maxExtents = 1 << 16

	// metaBaseAllocation is the one metadata context we serve.
	metaBaseAllocation = "base:allocation"
	// metaBaseAllocationID is its id, chosen by the server.
	metaBaseAllocationID = 1
)

const requestLen = 28

// Request is one transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

var errBadMagic = errors.New("nbd: bad request magic")

// parseRequest decodes a 28-byte request header.
func parseRequest(b []byte) (Request, error) {
	if len(b) != requestLen {
		return Request{}, fmt.Errorf("nbd: request header is %d bytes, want %d", len(b), requestLen)
	}
	if m := binary.BigEndian.Uint32(b); m != NBD_REQUEST_MAGIC {
		return Request{}, fmt.Errorf("%w %#x", errBadMagic, m)
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   binary.BigEndian.Uint16(b[6:]),
		Cookie: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// appendRequest encodes a request header (used by tests and clients).
func appendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, NBD_REQUEST_MAGIC)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

func appendSimpleReply(b []byte, errno uint32, cookie uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, NBD_SIMPLE_REPLY_MAGIC)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, cookie)
}

// appendChunkHeader encodes a structured reply chunk header; the payload follows.
func appendChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, NBD_STRUCTURED_REPLY_MAGIC)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return binary.BigEndian.AppendUint32(b, length)
}

func appendOptReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, NBD_OPTION_REPLY_MAGIC)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}
