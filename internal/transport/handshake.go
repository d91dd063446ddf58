package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Connection kinds, sent by the dialer in the handshake.
const (
	connControl byte = 1 // frames from dialer to acceptor
	connLink    byte = 2 // a raw link, after a hello and a verdict
)

// Handshake sizes.
const (
	preface = "SHI1"
	// MaxName is the longest host name the handshake carries.
	MaxName = 64
	// MaxHello is the longest hello DialLink sends.
	MaxHello  = 1024
	nonceSize = 32
	macSize   = sha256.Size
)

// Results the acceptor sends after checking the dialer's MAC.
const (
	resultOK         byte = 0
	resultAuthFailed byte = 1
)

// ErrAuth means the two ends of a connection do not share the cluster key
// (or one has a key and the other has none).
var ErrAuth = errors.New("transport: authentication failed")

// stream turns a freshly connected TCP stream into the stream that the
// handshake, frames and links run over; host is the host a dialer meant
// to reach ("" on the acceptor's end). Without Config.TLS it is
// plainStream: the HMAC handshake authenticates both ends at connection
// setup, and hosts trust their network for the rest (no confidentiality,
// and an attacker in the path could take over a stream after the
// handshake). With it, tlsStream: mutual TLS, each end's certificate
// checked against membership (tlsconf). LinkFile then relays links
// instead of handing out the TCP socket, since it sees that the stream is
// not a bare *net.TCPConn.
type stream func(c net.Conn, host string) (net.Conn, error)

func plainStream(c net.Conn, host string) (net.Conn, error) { return c, nil }

// tlsStream runs the TLS handshake within the handshake timeout; a peer
// that speaks plaintext, has no certificate, or one that does not name
// the member at its address (or, for a dialer, host) is refused here.
func (m *Mesh) tlsStream(c net.Conn, host string) (net.Conn, error) {
	var tc *tls.Conn
	if host != "" {
		tc = tls.Client(c, m.cfg.TLS.Client(c.RemoteAddr().String(), host))
	} else {
		tc = tls.Server(c, m.cfg.TLS.Server())
	}
	_ = c.SetDeadline(time.Now().Add(m.tun.handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// tlsPeer checks that the name an accepted connection's handshake claims
// is the member its certificate names: a host may not speak for another
// over its own certificate.
func (m *Mesh) tlsPeer(c net.Conn, name string) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	who, err := m.cfg.TLS.Verify(tc.ConnectionState().PeerCertificates, net.ParseIP(host))
	if err == nil && who != name {
		err = fmt.Errorf("the certificate of %s claims to be %q", who, name)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return nil
}

// The handshake, the same for both connection kinds (D = dialer,
// A = acceptor, ‖ = concatenation, MAC = HMAC-SHA256 with the cluster
// key):
//
//	D -> A  "SHI1" ‖ kind (1) ‖ len(name) (1) ‖ name ‖ nonceD (32)
//	A -> D  nonceA (32) ‖ MAC_a
//	        MAC_a = MAC("shi acceptor" ‖ nonceD ‖ nonceA ‖ name)
//	D -> A  MAC_d
//	        MAC_d = MAC("shi dialer" ‖ kind ‖ nonceA ‖ nonceD ‖ name)
//	A -> D  result (1): 0 accepted, 1 authentication failed
//
// then, on a link only:
//
//	D -> A  len(hello) (u16 LE) ‖ hello
//	A -> D  verdict (1): 0 accepted, else a syscall.Errno number
//
// Without a key both MACs are all zero and neither end checks them. Each
// end proves it holds the key over the other's fresh nonce, so a recorded
// handshake cannot be replayed; the kind and the dialer's name are bound
// by the MACs. The dialer checks MAC_a first; if it fails, it sends a zero
// MAC_d (nothing computed with its key goes to an unproven peer), which
// makes a keyed acceptor fail too, so both ends see and count the
// failure. The result byte is not in the spec we started from: without
// it a dialer refused by the acceptor would only see its connection
// close, and could not say why.

// mac computes HMAC-SHA256(key, label ‖ parts...).
func mac(key []byte, label string, parts ...[]byte) [macSize]byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write(p)
	}
	var out [macSize]byte
	h.Sum(out[:0])
	return out
}

// dialHandshake runs the dialer's side on rw. key nil means no
// authentication.
func dialHandshake(rw io.ReadWriter, key []byte, kind byte, name string) error {
	if len(name) == 0 || len(name) > MaxName {
		return fmt.Errorf("transport: host name of %d bytes (want 1 to %d)", len(name), MaxName)
	}
	var nd [nonceSize]byte
	if _, err := rand.Read(nd[:]); err != nil {
		return err
	}
	hello := make([]byte, 0, len(preface)+2+len(name)+nonceSize)
	hello = append(hello, preface...)
	hello = append(hello, kind, byte(len(name)))
	hello = append(hello, name...)
	hello = append(hello, nd[:]...)
	if _, err := rw.Write(hello); err != nil {
		return err
	}
	var reply [nonceSize + macSize]byte
	if _, err := io.ReadFull(rw, reply[:]); err != nil {
		return fmt.Errorf("transport: handshake: reading the acceptor's nonce: %w", err)
	}
	na, macA := reply[:nonceSize], reply[nonceSize:]
	var macD [macSize]byte
	var authErr error
	if key != nil {
		want := mac(key, "shi acceptor", nd[:], na, []byte(name))
		if hmac.Equal(want[:], macA) {
			macD = mac(key, "shi dialer", []byte{kind}, na, nd[:], []byte(name))
		} else {
			authErr = fmt.Errorf("%w: the acceptor's MAC does not match our key (a different cluster key, or none?)", ErrAuth)
		}
	}
	if _, err := rw.Write(macD[:]); err != nil && authErr == nil {
		return err
	}
	if authErr != nil {
		return authErr
	}
	var result [1]byte
	if _, err := io.ReadFull(rw, result[:]); err != nil {
		return fmt.Errorf("transport: handshake: reading the acceptor's result: %w", err)
	}
	switch result[0] {
	case resultOK:
		return nil
	case resultAuthFailed:
		return fmt.Errorf("%w: the acceptor refused our MAC (a different cluster key, or none?)", ErrAuth)
	default:
		return fmt.Errorf("%w: handshake result %d", ErrMalformed, result[0])
	}
}

// acceptHandshake runs the acceptor's side on rw and returns the
// connection's kind and the dialer's name. key nil means no
// authentication. Everything it reads is bounded: MaxName plus a few
// fixed fields.
func acceptHandshake(rw io.ReadWriter, key []byte) (kind byte, name string, err error) {
	var head [len(preface) + 2]byte
	if _, err := io.ReadFull(rw, head[:]); err != nil {
		return 0, "", fmt.Errorf("transport: handshake: reading the preface: %w", err)
	}
	if string(head[:len(preface)]) != preface {
		return 0, "", fmt.Errorf("%w: preface %q, want %q", ErrMalformed, head[:len(preface)], preface)
	}
	kind, n := head[len(preface)], int(head[len(preface)+1])
	if kind != connControl && kind != connLink {
		return 0, "", fmt.Errorf("%w: connection kind %d", ErrMalformed, kind)
	}
	if n == 0 || n > MaxName {
		return 0, "", fmt.Errorf("%w: host name of %d bytes (want 1 to %d)", ErrMalformed, n, MaxName)
	}
	rest := make([]byte, n+nonceSize)
	if _, err := io.ReadFull(rw, rest); err != nil {
		return 0, "", fmt.Errorf("transport: handshake: reading the dialer's name: %w", err)
	}
	nameB, nd := rest[:n], rest[n:]
	name = string(nameB)

	var reply [nonceSize + macSize]byte
	na := reply[:nonceSize]
	if _, err := rand.Read(na); err != nil {
		return 0, "", err
	}
	if key != nil {
		macA := mac(key, "shi acceptor", nd, na, nameB)
		copy(reply[nonceSize:], macA[:])
	}
	if _, err := rw.Write(reply[:]); err != nil {
		return 0, name, err
	}
	var macD [macSize]byte
	if _, err := io.ReadFull(rw, macD[:]); err != nil {
		return 0, name, fmt.Errorf("transport: handshake: reading the dialer's MAC: %w", err)
	}
	if key != nil {
		want := mac(key, "shi dialer", []byte{kind}, na, nd, nameB)
		if !hmac.Equal(want[:], macD[:]) {
			// Best effort: the dialer may already have given up on us.
			_, _ = rw.Write([]byte{resultAuthFailed})
			return 0, name, fmt.Errorf("%w: the dialer's MAC does not match our key (a different cluster key, or none?)", ErrAuth)
		}
	}
	if _, err := rw.Write([]byte{resultOK}); err != nil {
		return 0, name, err
	}
	return kind, name, nil
}

// writeHello sends a link's hello (the caller checked its size).
func writeHello(w io.Writer, hello []byte) error {
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, 2+len(hello)), uint16(len(hello)))
	_, err := w.Write(append(b, hello...))
	return err
}

// readHello reads a link's hello, refusing one longer than MaxHello
// before reading it.
func readHello(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("transport: reading a link's hello: %w", err)
	}
	size := int(binary.LittleEndian.Uint16(n[:]))
	if size > MaxHello {
		return nil, fmt.Errorf("%w: hello of %d bytes (max %d)", ErrMalformed, size, MaxHello)
	}
	hello := make([]byte, size)
	if _, err := io.ReadFull(r, hello); err != nil {
		return nil, fmt.Errorf("transport: reading a link's hello: %w", err)
	}
	return hello, nil
}
