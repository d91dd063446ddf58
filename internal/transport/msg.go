package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is a peer message type. The meaning of the slots per kind is
// defined by the user (the hypervisor); the codec only carries them.
type Kind uint8

// The kinds the hypervisor exchanges between agents. The numbers are part
// of the wire format and never change; a new kind takes a new number.
const (
	// KindBindReq: bind a port across hosts; answered by KindBindResp.
	KindBindReq Kind = 1
	// KindBindResp: the answer to KindBindReq.
	KindBindResp Kind = 2
	// KindSend: an event-channel send to a port on another host.
	KindSend Kind = 3
	// KindClose: a port bound across hosts was closed.
	KindClose Kind = 4
	// KindStatusReq: ask for a remote port's status; answered by
	// KindStatusResp.
	KindStatusReq Kind = 5
	// KindStatusResp: the answer to KindStatusReq.
	KindStatusResp Kind = 6
	// KindMapReq: map a grant of a domain on another host; answered by
	// KindMapResp.
	KindMapReq Kind = 7
	// KindMapResp: the answer to KindMapReq.
	KindMapResp Kind = 8
	// KindUnmap: a remote mapping of a grant was dropped.
	KindUnmap Kind = 9
	// KindCopyReq: a grant copy touching a page on another host; answered
	// by KindCopyResp.
	KindCopyReq Kind = 10
	// KindCopyResp: the answer to KindCopyReq.
	KindCopyResp Kind = 11
	// KindRevoke: the granter withdrew a grant that a remote host mapped.
	KindRevoke Kind = 12
	// KindDomainGone: a domain of the sending host is gone (destroyed,
	// crashed): the receiver forgets what ties its domains to it.
	KindDomainGone Kind = 13
)

var kindNames = [...]string{
	KindBindReq: "bind_req", KindBindResp: "bind_resp", KindSend: "send", KindClose: "close",
	KindStatusReq: "status_req", KindStatusResp: "status_resp", KindMapReq: "map_req",
	KindMapResp: "map_resp", KindUnmap: "unmap", KindCopyReq: "copy_req", KindCopyResp: "copy_resp",
	KindRevoke: "revoke", KindDomainGone: "domain_gone",
}

// String returns the kind's name, or "kind<n>" for a kind this version
// does not know.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Msg is one peer message. Unused slots are zero.
type Msg struct {
	Kind     Kind
	Flags    uint16
	ID       uint64 // request id, echoed by a response; 0 for one-way messages
	Errno    uint32
	Status   int16
	FromDom  uint16
	ToDom    uint16
	FromPort uint32
	ToPort   uint32
	Ref      uint32
	Frame    uint32
	Arg      [4]uint32
	Data     []byte // at most MaxData bytes
}

// Sizes of the wire format.
const (
	// MaxData is the most bytes of Data one message carries: enough for a
	// page plus a diff.
	MaxData = 3 * 4096
	// HeaderSize is the size of the fixed header that follows the length
	// prefix.
	HeaderSize = 56
	// prefixSize is the size of the length prefix.
	prefixSize = 4
	// MaxFrame is the largest frame on the wire, length prefix included.
	MaxFrame = prefixSize + HeaderSize + MaxData
)

// ErrMalformed means bytes from the network are not a valid frame (or
// handshake). The connection they came on is closed.
var ErrMalformed = errors.New("transport: malformed input")

// ErrTooLarge means a message's Data is longer than MaxData.
var ErrTooLarge = errors.New("transport: message data too large")

// FrameSize is the size on the wire of m's frame, length prefix included.
func FrameSize(m *Msg) int { return prefixSize + HeaderSize + len(m.Data) }

// AppendFrame appends m's frame, length prefix included, to dst.
// The caller checks len(m.Data) <= MaxData (Send does): a longer message
// would be a frame every receiver refuses, so AppendFrame panics rather
// than put it on the wire.
func AppendFrame(dst []byte, m *Msg) []byte {
	if len(m.Data) > MaxData {
		panic(fmt.Sprintf("transport: AppendFrame with %d bytes of data (max %d)", len(m.Data), MaxData))
	}
	le := binary.LittleEndian
	dst = le.AppendUint32(dst, uint32(HeaderSize+len(m.Data)))
	dst = append(dst, byte(m.Kind), 0)
	dst = le.AppendUint16(dst, m.Flags)
	dst = le.AppendUint32(dst, m.Errno)
	dst = le.AppendUint64(dst, m.ID)
	dst = le.AppendUint16(dst, uint16(m.Status))
	dst = le.AppendUint16(dst, m.FromDom)
	dst = le.AppendUint16(dst, m.ToDom)
	dst = append(dst, 0, 0)
	for _, v := range [...]uint32{m.FromPort, m.ToPort, m.Ref, m.Frame, m.Arg[0], m.Arg[1], m.Arg[2], m.Arg[3]} {
		dst = le.AppendUint32(dst, v)
	}
	return append(dst, m.Data...)
}

// DecodeFrame parses one frame without its length prefix: the header and
// then the data, so len(b) is the prefix's value. Data aliases b (nil when
// empty). Any kind decodes, known or not, so that a newer agent's message
// reaches the handler, which refuses it, instead of breaking the
// connection; only sizes and the reserved bytes are checked.
func DecodeFrame(b []byte) (Msg, error) {
	if len(b) < HeaderSize || len(b) > HeaderSize+MaxData {
		return Msg{}, fmt.Errorf("%w: frame of %d bytes (want %d to %d)", ErrMalformed, len(b), HeaderSize, HeaderSize+MaxData)
	}
	// Reserved bytes must be zero so that the encoding stays canonical
	// (what decodes re-encodes to the same bytes). A later version that
	// gives them a meaning changes the handshake preface, so an agent of
	// this version never sees them set by a peer that means something.
	if b[1] != 0 || b[22] != 0 || b[23] != 0 {
		return Msg{}, fmt.Errorf("%w: reserved header bytes set", ErrMalformed)
	}
	le := binary.LittleEndian
	m := Msg{
		Kind:     Kind(b[0]),
		Flags:    le.Uint16(b[2:]),
		Errno:    le.Uint32(b[4:]),
		ID:       le.Uint64(b[8:]),
		Status:   int16(le.Uint16(b[16:])),
		FromDom:  le.Uint16(b[18:]),
		ToDom:    le.Uint16(b[20:]),
		FromPort: le.Uint32(b[24:]),
		ToPort:   le.Uint32(b[28:]),
		Ref:      le.Uint32(b[32:]),
		Frame:    le.Uint32(b[36:]),
	}
	for i := range m.Arg {
		m.Arg[i] = le.Uint32(b[40+4*i:])
	}
	if len(b) > HeaderSize {
		m.Data = b[HeaderSize:]
	}
	return m, nil
}
