// Package wire encodes and decodes XenStore messages (struct xsd_sockmsg and
// its payload, xs_wire.h): the same framing on a Unix socket, on xenbus and
// inside a shared ring. It does no I/O beyond the io.Reader/io.Writer it is
// handed, and every byte it decodes may come from a hostile domain.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"shi/internal/abi"
)

// Msg is one XenStore message: the 16-byte header and its payload.
type Msg struct {
	Type    uint32
	ReqID   uint32
	TxID    uint32
	Payload []byte
}

// Errors of the framing layer. A connection that produces one of them is
// closed, as C xenstored does: after a bad header the stream cannot be
// re-synchronised.
var (
	ErrTooLong   = errors.New("xenstore wire: payload longer than XENSTORE_PAYLOAD_MAX")
	ErrTruncated = errors.New("xenstore wire: connection closed mid-message")
)

// HeaderSize is the size of struct xsd_sockmsg.
const HeaderSize = abi.XS_HEADER_SIZE

// PutHeader writes m's header, with len = len(m.Payload), into b[:16].
func (m *Msg) PutHeader(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], m.Type)
	binary.LittleEndian.PutUint32(b[4:], m.ReqID)
	binary.LittleEndian.PutUint32(b[8:], m.TxID)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(m.Payload)))
}

// Append appends the encoded message to b.
func (m *Msg) Append(b []byte) []byte {
	var h [HeaderSize]byte
	m.PutHeader(h[:])
	b = append(b, h[:]...)
	return append(b, m.Payload...)
}

// Bytes returns the encoded message.
func (m *Msg) Bytes() []byte { return m.Append(make([]byte, 0, HeaderSize+len(m.Payload))) }

// Write writes the encoded message to w in one call.
func (m *Msg) Write(w io.Writer) error {
	_, err := w.Write(m.Bytes())
	return err
}

// Read reads one message from r. It returns io.EOF only when r ends cleanly
// between messages, ErrTruncated when it ends inside one, and ErrTooLong when
// the header announces more than XENSTORE_PAYLOAD_MAX bytes (nothing of the
// payload is read then; the caller should drop the connection).
func Read(r io.Reader) (Msg, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Msg{}, ErrTruncated
		}
		return Msg{}, err
	}
	m, n, err := ParseHeader(h[:])
	if err != nil {
		return m, err
	}
	m.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, m.Payload); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Msg{}, ErrTruncated
		}
		return Msg{}, err
	}
	return m, nil
}

// ParseHeader decodes a 16-byte header and returns the message (without
// payload) and the announced payload length.
func ParseHeader(h []byte) (Msg, int, error) {
	if len(h) < HeaderSize {
		return Msg{}, 0, ErrTruncated
	}
	m := Msg{
		Type:  binary.LittleEndian.Uint32(h[0:]),
		ReqID: binary.LittleEndian.Uint32(h[4:]),
		TxID:  binary.LittleEndian.Uint32(h[8:]),
	}
	n := binary.LittleEndian.Uint32(h[12:])
	if n > abi.XENSTORE_PAYLOAD_MAX {
		return m, 0, ErrTooLong
	}
	return m, int(n), nil
}

// Decode decodes exactly one message from b and returns the bytes after it.
func Decode(b []byte) (Msg, []byte, error) {
	m, n, err := ParseHeader(b)
	if err != nil {
		return m, b, err
	}
	if len(b) < HeaderSize+n {
		return Msg{}, b, ErrTruncated
	}
	// Allocated as Read does, so an empty payload is empty, not nil, from
	// either.
	m.Payload = make([]byte, n)
	copy(m.Payload, b[HeaderSize:])
	return m, b[HeaderSize+n:], nil
}

// Reply builds a reply to req with the same type and ids.
func Reply(req Msg, payload []byte) Msg {
	return Msg{Type: req.Type, ReqID: req.ReqID, TxID: req.TxID, Payload: payload}
}

// OK is the conventional success payload "OK\0".
var OK = []byte("OK\x00")

// ErrorReply builds an XS_ERROR reply to req carrying errno's wire name.
func ErrorReply(req Msg, errno syscall.Errno) Msg {
	return Msg{Type: abi.XS_ERROR, ReqID: req.ReqID, TxID: req.TxID, Payload: []byte(abi.XSErrorName(errno) + "\x00")}
}

// WatchEvent builds an unsolicited XS_WATCH_EVENT for path and token.
func WatchEvent(path, token string) Msg {
	p := make([]byte, 0, len(path)+len(token)+2)
	p = append(p, path...)
	p = append(p, 0)
	p = append(p, token...)
	p = append(p, 0)
	return Msg{Type: abi.XS_WATCH_EVENT, Payload: p}
}

// Strings splits a payload of NUL-terminated strings ("a\0b\0") into its
// strings. A final unterminated part is an error: Xen requires the NUL.
func Strings(p []byte) ([]string, error) {
	var out []string
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return nil, errNoNUL
		}
		out = append(out, string(p[:i]))
		p = p[i+1:]
	}
	return out, nil
}

// String returns the single NUL-terminated string that makes up a payload.
// Trailing bytes after the first NUL are rejected.
func String(p []byte) (string, error) {
	i := bytes.IndexByte(p, 0)
	if i < 0 {
		return "", errNoNUL
	}
	if i != len(p)-1 {
		return "", errTrailing
	}
	return string(p[:i]), nil
}

// PathValue splits a WRITE payload "<path>\0<value bytes>" (value without
// terminator).
func PathValue(p []byte) (string, []byte, error) {
	i := bytes.IndexByte(p, 0)
	if i < 0 {
		return "", nil, errNoNUL
	}
	return string(p[:i]), p[i+1:], nil
}

var (
	errNoNUL    = errors.New("xenstore wire: string without NUL terminator")
	errTrailing = errors.New("xenstore wire: bytes after the NUL terminator")
)

// JoinStrings encodes strings as consecutive NUL-terminated strings.
func JoinStrings(ss ...string) []byte {
	n := 0
	for _, s := range ss {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	for _, s := range ss {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// String renders a message for logs.
func (m Msg) String() string {
	p := m.Payload
	if len(p) > 64 {
		p = p[:64]
	}
	return fmt.Sprintf("%s req=%d tx=%d len=%d %q", abi.XSTypeName(m.Type), m.ReqID, m.TxID, len(m.Payload), p)
}
