package hypervisor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/hypercall"
)

// A link is a stream between a local domain and a domain of another host,
// which the two hypervisors set up and hand to their domains: the
// domains' libraries send events and page updates on it directly (one
// write per send, no agent in the path), so an event always comes after
// the page updates it releases (DESIGN.md §3). A link exists before any
// port is bound or grant mapped across the pair: the hypervisor hands it
// to its domain before the bind's or map's reply or notification, so the
// library always has the link when it learns of a remote peer.
//
// The host that needs a link first dials (Peers.Link); the other accepts
// (AcceptLink). When both dial at once, the dial of the host with the
// smaller name wins and the other is refused with EEXIST; its waiters are
// then served when the winning dial is accepted.

type linkKey struct{ local, peer DomID }

type link struct {
	host      string
	f         *os.File // this end, kept to shut the link down
	up        bool
	dialing   bool      // our dial is in flight
	accepting bool      // the peer's dial is being accepted (AcceptLink)
	since     time.Time // when it started to wait, for the sweeper
	waiters   []func(error)
}

// helloSize is the size of a link's hello: magic, version, the dialing
// domain, the domain it is for.
const helloSize = 8

var helloMagic = [3]byte{'s', 'l', 'k'}

func encodeHello(from, to DomID) []byte {
	b := make([]byte, helloSize)
	copy(b, helloMagic[:])
	b[3] = 1 // version
	binary.LittleEndian.PutUint16(b[4:], uint16(from))
	binary.LittleEndian.PutUint16(b[6:], uint16(to))
	return b
}

func decodeHello(b []byte) (from, to DomID, err error) {
	if len(b) != helloSize || [3]byte(b[:3]) != helloMagic || b[3] != 1 {
		return 0, 0, fmt.Errorf("hypervisor: malformed link hello (%d bytes): %w", len(b), syscall.EINVAL)
	}
	return DomID(binary.LittleEndian.Uint16(b[4:])), DomID(binary.LittleEndian.Uint16(b[6:])), nil
}

// withLink runs then once d has a link to peer on host (err nil), or it
// could not get one.
// Preconditions: h.mu held; then runs under it.
func (h *Hypervisor) withLink(d *vdom, peer DomID, host string, then func(error)) {
	if h.peers == nil {
		then(fmt.Errorf("hypervisor: dom%d is on host %q and this agent has no data plane: %w", peer, host, syscall.EHOSTUNREACH))
		return
	}
	key := linkKey{d.id, peer}
	l := h.links[key]
	switch {
	case l != nil && l.up:
		then(nil)
		return
	case l != nil:
		l.waiters = append(l.waiters, then)
		return
	}
	l = &link{host: host, dialing: true, since: time.Now(), waiters: []func(error){then}}
	h.links[key] = l
	hello := encodeHello(d.id, peer)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
		f, err := h.peers.Link(ctx, host, hello)
		cancel()
		h.mu.Lock()
		defer h.mu.Unlock()
		h.dialed(key, l, f, err)
	}()
}

// dialed takes the result of our dial for key.
// Preconditions: h.mu held.
func (h *Hypervisor) dialed(key linkKey, l *link, f *os.File, err error) {
	l.dialing = false
	if h.links[key] != l || l.up || l.accepting || h.closed {
		// Dropped meanwhile (its domain or host went), or the peer's own
		// dial won: this one is not needed.
		if f != nil {
			shutdown(f)
		}
		return
	}
	if errors.Is(err, syscall.EEXIST) {
		// The peer dials us too and its dial wins: it will be accepted
		// (or the sweeper gives up).
		return
	}
	if err != nil {
		delete(h.links, key)
		for _, w := range l.waiters {
			w(fmt.Errorf("hypervisor: no link to dom%d on host %q: %w", key.peer, l.host, errnoOr(err, syscall.EHOSTUNREACH)))
		}
		return
	}
	h.linkUp(key, l, f)
}

// AcceptLink takes a link another host dialed for one of our domains
// (hello says which), in two steps: AcceptLink records it as coming, so
// that the dialer's requests, which follow the acceptor's verdict, find
// it; then the returned up function gives it the link's descriptor, once
// the verdict is on its way (a domain may write only after it). up(nil)
// gives up. On error the caller refuses the link with the error's errno.
func (h *Hypervisor) AcceptLink(from string, hello []byte) (up func(*os.File), err error) {
	src, dst, err := decodeHello(hello)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("hypervisor: closed: %w", syscall.ESHUTDOWN)
	}
	if h.doms[dst] == nil {
		return nil, fmt.Errorf("hypervisor: link from %s/dom%d for dom%d: no such domain: %w", from, src, dst, syscall.ESRCH)
	}
	key := linkKey{dst, src}
	l := h.links[key]
	switch {
	case l != nil && (l.up || l.accepting):
		return nil, fmt.Errorf("hypervisor: dom%d already has a link to dom%d: %w", dst, src, syscall.EEXIST)
	case l != nil && l.dialing && h.host < from:
		return nil, fmt.Errorf("hypervisor: dom%d is dialing dom%d itself: %w", dst, src, syscall.EEXIST)
	case l == nil:
		l = &link{since: time.Now()}
		h.links[key] = l
	}
	l.host, l.accepting = from, true
	return func(f *os.File) {
		h.mu.Lock()
		defer h.mu.Unlock()
		l.accepting = false
		switch {
		case f == nil:
			h.closeLinks(func(k linkKey, x *link) bool { return x == l })
		case h.links[key] != l || h.doms[dst] == nil || h.closed:
			shutdown(f) // its domain went meanwhile
		default:
			h.linkUp(key, l, f)
		}
	}, nil
}

// whenLinked runs then once the link local-peer on host is up, or with an
// error if there is none (nor one being accepted).
// Preconditions: h.mu held; then runs under it.
func (h *Hypervisor) whenLinked(local, peer DomID, host string, then func(error)) {
	l := h.links[linkKey{local, peer}]
	switch {
	case l == nil || l.host != host:
		then(fmt.Errorf("hypervisor: dom%d has no link to %s/dom%d: %w", local, host, peer, syscall.ENOLINK))
	case l.up:
		then(nil)
	default:
		l.waiters = append(l.waiters, then)
	}
}

// linkUp records a working link, hands the domain its end, and runs what
// waited for it.
// Preconditions: h.mu held; the domain exists.
func (h *Hypervisor) linkUp(key linkKey, l *link, f *os.File) {
	l.up, l.f = true, f
	d := h.doms[key.local]
	fd, err := dupFD(int(f.Fd()))
	if err != nil {
		d.log.Error("hypervisor: cannot pass a link", "peer", key.peer, "err", err)
	} else {
		d.notify(hypercall.Msg{Op: hypercall.NotifyLink, Dom: uint16(key.peer)}, fd)
	}
	ws := l.waiters
	l.waiters = nil
	for _, w := range ws {
		w(nil)
	}
}

// closeLinks shuts down the links that match: the domains' libraries see
// the end of the stream.
// Preconditions: h.mu held.
func (h *Hypervisor) closeLinks(match func(linkKey, *link) bool) {
	for k, l := range h.links {
		if !match(k, l) {
			continue
		}
		delete(h.links, k)
		if l.f != nil {
			shutdown(l.f)
		}
		for _, w := range l.waiters {
			w(fmt.Errorf("hypervisor: the link to dom%d on %q went away: %w", k.peer, l.host, syscall.ESRCH))
		}
	}
}

// shutdown ends a link for every holder of its descriptor, then closes
// ours.
func shutdown(f *os.File) {
	unix.Shutdown(int(f.Fd()), unix.SHUT_RDWR)
	f.Close()
}

func errnoOr(err error, def syscall.Errno) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}

// LinkPeers lists the remote domains a local domain has links to.
func (h *Hypervisor) LinkPeers(id DomID) []DomID {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []DomID
	for k, l := range h.links {
		if k.local == id && l.up {
			out = append(out, k.peer)
		}
	}
	return out
}
