// Package hypercall is the protocol between a domain and its agent: shi's
// hypercalls. A domain holds one SOCK_SEQPACKET connection to its agent
// (inherited as SHI_DOMAIN_FD); each message is one packet with a fixed
// 48-byte header, optional data, and descriptors attached with SCM_RIGHTS.
//
// The domain sends requests (ID != 0) and the agent answers each with a
// reply carrying the same ID and Op. The agent also sends notifications
// (ID == 0) when another domain's action concerns this one: a peer bound
// or closed a port, a mapped grant was revoked. Replies and notifications
// to one domain are sent in the order the agent decided them, so a domain
// that applies them in order sees a consistent history.
//
// The header is a flat set of slots whose meaning depends on Op (see the
// Op constants). Decode accepts any bytes of the right size; checking the
// values is the handler's job. This package is pure: no sockets.
package hypercall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"shi/internal/abi"
)

// Op names a request, its reply, or a notification.
type Op uint16

// Requests (domain -> agent) and their replies. "in" lists the request's
// slots, "out" the reply's; fds are attached descriptors.
const (
	// in: -. out: Dom = own domid, Frame = grant-table pages,
	// Arg[0] = max shared pages, Arg[1] = max ports, Arg[2] = max maps;
	// fds: the grant table's memfd.
	OpHello Op = 1
	// in: Dom = remote domain. out: Port; fds: the port's eventfd.
	OpEvtchnAllocUnbound Op = 2
	// in: Dom = remote domain, Port = remote port. out: Port (local);
	// fds: the port's eventfd, then the peer's doorbell unless the peer
	// is remote (Flags&FlagRemote, Arg[0] = peer domain, Arg[1] = peer
	// port: sends go on the link to the peer's domain).
	OpEvtchnBindInterdomain Op = 3
	// in: -. out: Port; fds: the port's eventfd, then its doorbell (the
	// same eventfd: an IPI port signals itself).
	OpEvtchnBindIPI Op = 4
	// in: Port. The slow path of a send: the agent kicks the peer.
	OpEvtchnSend Op = 5
	// in: Port.
	OpEvtchnClose Op = 6
	// in: Dom, Port. out: Data = struct evtchn_status.
	OpEvtchnStatus Op = 7
	// in: Arg[0] = notify offset, Arg[1] = notify port (NoNotify: none);
	// fds: a sealed one-page memfd. out: Frame = its frame number.
	OpGnttabSharePage Op = 16
	// in: Frame. Withdraws a shared page; EBUSY while a grant of it is
	// mapped.
	OpGnttabUnsharePage Op = 17
	// in: Dom = granter, Ref, Flags = GNTMAP_* (readonly), Arg[0] =
	// notify offset, Arg[1] = notify port, Arg[2] = the library's
	// generation for a map of a grant of another host. out: Status =
	// GNTST_*, Handle, Frame; fds: the page's memfd (read-only if
	// asked), or none with FlagRemote: the granter is on another host and
	// its library sends the page over their link.
	OpGnttabMap Op = 18
	// in: Handle. out: Status.
	OpGnttabUnmap Op = 19
	// in: Data = struct gnttab_copy, then the source bytes when the
	// source is InlineFrame. out: Status; Data = the copied bytes when
	// the destination is InlineFrame.
	OpGnttabCopy Op = 20
	// in: Frame; fds: a sealed one-page memfd holding the page's current
	// bytes. After the domain ended a grant of the frame: if the agent
	// ever handed the frame's page to a mapper, it takes the new page in
	// its place and answers Flags = FlagReplaced (the domain then maps
	// the new page where the old one was), so a mapper that kept the old
	// descriptor no longer sees the domain's memory. EBUSY while another
	// grant of the frame is mapped.
	OpGnttabRefreshPage Op = 21
	// in: Ref, Dom = mapper, Arg[0] = generation. The granter's library
	// has applied everything the mapper (of another host) wrote up to its
	// fence for that generation: the agent may unpin the grant.
	OpGnttabRemoteUnpin Op = 22
)

// Notifications (agent -> domain, ID 0).
const (
	// Port: a peer bound to it; fds: the peer's doorbell, or none with
	// FlagRemote (Arg[0] = peer domain, Arg[1] = peer port: sends go on
	// the link to the peer's domain, or through OpEvtchnSend).
	NotifyEvtchnConnect Op = 64
	// Port: the peer closed (or died); the port is unbound again and has
	// been made pending so that a waiter notices.
	NotifyEvtchnDisconnect Op = 65
	// Port: the agent closed the port.
	NotifyEvtchnRelease Op = 66
	// Handle: the granter of this mapping is gone; the agent no longer
	// tracks it and the page is no longer shared with anyone else. For a
	// grant of another host, Arg[0] is the granter's unmap notification
	// byte (NoNotify: none), which the library clears in its replica.
	NotifyGnttabRevoke Op = 67
	// Dom: a domain of another host; fds: the link to it, a stream both
	// libraries speak directly (events and page updates, in order).
	NotifyLink Op = 68
	// Ref, Frame, Dom = mapper (of another host), Flags = GNTMAP_readonly
	// or 0, Arg[0] = the mapper's generation: the mapper mapped this
	// grant; the library shares the frame with it over their link.
	NotifyGnttabRemoteMap Op = 69
	// Ref, Dom = mapper, Arg[0] = generation: the mapper (or its host)
	// is gone; stop sharing the frame with it, for generations up to
	// Arg[0].
	NotifyGnttabRemoteUnmap Op = 70
)

// Flags.
const (
	// FlagRemote marks a peer on another host: no doorbell descriptor.
	FlagRemote uint16 = 1
	// FlagReplaced: OpGnttabRefreshPage took the new page.
	FlagReplaced uint16 = 2
)

// InlineFrame, as the U of a non-grant side of a gnttab_copy, names the
// bytes carried in the message instead of one of the caller's frames.
const InlineFrame = ^uint64(0)

// NoNotify in a notify slot means no unmap notification.
const NoNotify = ^uint32(0)

// Sizes.
const (
	HeaderSize = 48
	MaxData    = abi.GnttabCopySize + abi.PAGE_SIZE
	MaxMsg     = HeaderSize + MaxData
	// MaxFDs is the most descriptors any message carries.
	MaxFDs = 2
)

// Msg is one message. Unused slots are zero.
type Msg struct {
	ID     uint32 // request id, echoed by the reply; 0 for notifications
	Op     Op
	Flags  uint16
	Errno  uint32 // replies: 0 or a syscall errno number
	Status int16  // grant replies: GNTST_*
	Dom    uint16
	Port   uint32
	Ref    uint32
	Handle uint32
	Frame  uint32
	Arg    [4]uint32
	Data   []byte
}

// ErrMalformed means a message is too short or too long.
var ErrMalformed = errors.New("hypercall: malformed message")

// Append encodes m after b.
func (m *Msg) Append(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, m.ID)
	b = le.AppendUint16(b, uint16(m.Op))
	b = le.AppendUint16(b, m.Flags)
	b = le.AppendUint32(b, m.Errno)
	b = le.AppendUint16(b, uint16(m.Status))
	b = le.AppendUint16(b, m.Dom)
	for _, v := range [...]uint32{m.Port, m.Ref, m.Handle, m.Frame, m.Arg[0], m.Arg[1], m.Arg[2], m.Arg[3]} {
		b = le.AppendUint32(b, v)
	}
	return append(b, m.Data...)
}

// Decode parses one message. Data aliases b.
func Decode(b []byte) (Msg, error) {
	if len(b) < HeaderSize || len(b) > MaxMsg {
		return Msg{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	le := binary.LittleEndian
	m := Msg{
		ID:     le.Uint32(b[0:]),
		Op:     Op(le.Uint16(b[4:])),
		Flags:  le.Uint16(b[6:]),
		Errno:  le.Uint32(b[8:]),
		Status: int16(le.Uint16(b[12:])),
		Dom:    le.Uint16(b[14:]),
		Port:   le.Uint32(b[16:]),
		Ref:    le.Uint32(b[20:]),
		Handle: le.Uint32(b[24:]),
		Frame:  le.Uint32(b[28:]),
	}
	for i := range m.Arg {
		m.Arg[i] = le.Uint32(b[32+4*i:])
	}
	if len(b) > HeaderSize {
		m.Data = b[HeaderSize:]
	}
	return m, nil
}

// RequestFDs is how many descriptors a request of op may carry.
func RequestFDs(op Op) int {
	if op == OpGnttabSharePage || op == OpGnttabRefreshPage {
		return 1
	}
	return 0
}

var opNames = map[Op]string{
	OpHello: "hello", OpEvtchnAllocUnbound: "evtchn_alloc_unbound", OpEvtchnBindInterdomain: "evtchn_bind_interdomain",
	OpEvtchnBindIPI: "evtchn_bind_ipi", OpEvtchnSend: "evtchn_send", OpEvtchnClose: "evtchn_close",
	OpEvtchnStatus: "evtchn_status", OpGnttabSharePage: "gnttab_share_page", OpGnttabUnsharePage: "gnttab_unshare_page",
	OpGnttabMap: "gnttab_map", OpGnttabUnmap: "gnttab_unmap", OpGnttabCopy: "gnttab_copy",
	OpGnttabRefreshPage: "gnttab_refresh_page", OpGnttabRemoteUnpin: "gnttab_remote_unpin",
	NotifyEvtchnConnect: "notify_evtchn_connect", NotifyEvtchnDisconnect: "notify_evtchn_disconnect",
	NotifyEvtchnRelease: "notify_evtchn_release", NotifyGnttabRevoke: "notify_gnttab_revoke",
	NotifyLink: "notify_link", NotifyGnttabRemoteMap: "notify_gnttab_remote_map",
	NotifyGnttabRemoteUnmap: "notify_gnttab_remote_unmap",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op%d", uint16(o))
}
