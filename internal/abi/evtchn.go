package abi

import (
	"encoding/binary"
	"errors"
)

// DomID is domid_t from xen.h.
type DomID uint16

// Special domain ids, from xen.h. DOMID_SELF is also DOMID_FIRST_RESERVED:
// every id at or above it is not a real domain.
const (
	DOMID_FIRST_RESERVED DomID = 0x7FF0
	DOMID_SELF           DomID = 0x7FF0
	DOMID_IO             DomID = 0x7FF1
	DOMID_XEN            DomID = 0x7FF2
	DOMID_COW            DomID = 0x7FF3
	DOMID_INVALID        DomID = 0x7FF4
	DOMID_IDLE           DomID = 0x7FFF
)

// EvtchnPort is evtchn_port_t from event_channel.h.
type EvtchnPort uint32

// EVTCHN_2L_NR_CHANNELS is the 2-level ABI's port limit for 64-bit guests
// (64 words of 64 bits), from event_channel.h.
const EVTCHN_2L_NR_CHANNELS = 64 * 64

// EVTCHNOP_* hypercall commands, from event_channel.h.
const (
	EVTCHNOP_bind_interdomain = 0
	EVTCHNOP_bind_virq        = 1
	EVTCHNOP_bind_pirq        = 2
	EVTCHNOP_close            = 3
	EVTCHNOP_send             = 4
	EVTCHNOP_status           = 5
	EVTCHNOP_alloc_unbound    = 6
	EVTCHNOP_bind_ipi         = 7
	EVTCHNOP_bind_vcpu        = 8
	EVTCHNOP_unmask           = 9
	EVTCHNOP_reset            = 10
	EVTCHNOP_init_control     = 11
	EVTCHNOP_expand_array     = 12
	EVTCHNOP_set_priority     = 13
	EVTCHNOP_reset_cont       = 14
)

// EVTCHNSTAT_* port states reported by EVTCHNOP_status, from event_channel.h.
const (
	EVTCHNSTAT_closed      = 0
	EVTCHNSTAT_unbound     = 1
	EVTCHNSTAT_interdomain = 2
	EVTCHNSTAT_pirq        = 3
	EVTCHNSTAT_virq        = 4
	EVTCHNSTAT_ipi         = 5
)

// VIRQ_* virtual interrupt numbers, from xen.h; NR_VIRQS bounds them.
const (
	VIRQ_TIMER      = 0
	VIRQ_DEBUG      = 1
	VIRQ_CONSOLE    = 2
	VIRQ_DOM_EXC    = 3
	VIRQ_TBUF       = 4
	VIRQ_DEBUGGER   = 6
	VIRQ_XENOPROF   = 7
	VIRQ_CON_RING   = 8
	VIRQ_PCPU_STATE = 9
	VIRQ_MEM_EVENT  = 10
	VIRQ_ARGO       = 11
	VIRQ_ENOMEM     = 12
	VIRQ_XENPMU     = 13
	NR_VIRQS        = 24
)

// ioctls of the Linux /dev/xen/evtchn device (include/uapi/xen/evtchn.h),
// which libxenevtchn wraps.
const (
	IOCTL_EVTCHN_BIND_VIRQ         = 0x44500
	IOCTL_EVTCHN_BIND_INTERDOMAIN  = 0x84501
	IOCTL_EVTCHN_BIND_UNBOUND_PORT = 0x44502
	IOCTL_EVTCHN_UNBIND            = 0x44503
	IOCTL_EVTCHN_NOTIFY            = 0x44504
	IOCTL_EVTCHN_RESET             = 0x4505
	IOCTL_EVTCHN_RESTRICT_DOMID    = 0x24506
)

// EvtchnStatusSize is sizeof(struct evtchn_status).
const EvtchnStatusSize = 24

// EvtchnStatus is struct evtchn_status: dom@0:2, port@4:4, status@8:4,
// vcpu@12:4 and the union u@16:8. Which union fields mean anything depends
// on Status: unbound sets RemoteDom; interdomain sets RemoteDom and
// RemotePort; pirq and virq set Num.
type EvtchnStatus struct {
	Dom        DomID
	Port       EvtchnPort
	Status     uint32
	VCPU       uint32
	RemoteDom  DomID      // u.unbound.dom, u.interdomain.dom
	RemotePort EvtchnPort // u.interdomain.port
	Num        uint32     // u.pirq, u.virq
}

var errShort = errors.New("abi: buffer too short")

// Encode writes s into b[:EvtchnStatusSize]; padding and unused union bytes
// are zero.
func (s *EvtchnStatus) Encode(b []byte) {
	_ = b[EvtchnStatusSize-1]
	clear(b[:EvtchnStatusSize])
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(s.Dom))
	le.PutUint32(b[4:], uint32(s.Port))
	le.PutUint32(b[8:], s.Status)
	le.PutUint32(b[12:], s.VCPU)
	switch s.Status {
	case EVTCHNSTAT_unbound:
		le.PutUint16(b[16:], uint16(s.RemoteDom))
	case EVTCHNSTAT_interdomain:
		le.PutUint16(b[16:], uint16(s.RemoteDom))
		le.PutUint32(b[20:], uint32(s.RemotePort))
	case EVTCHNSTAT_pirq, EVTCHNSTAT_virq:
		le.PutUint32(b[16:], s.Num)
	}
}

// DecodeEvtchnStatus reads a struct evtchn_status, keeping only the union
// member that Status selects.
func DecodeEvtchnStatus(b []byte) (EvtchnStatus, error) {
	if len(b) < EvtchnStatusSize {
		return EvtchnStatus{}, errShort
	}
	le := binary.LittleEndian
	s := EvtchnStatus{
		Dom:    DomID(le.Uint16(b[0:])),
		Port:   EvtchnPort(le.Uint32(b[4:])),
		Status: le.Uint32(b[8:]),
		VCPU:   le.Uint32(b[12:]),
	}
	switch s.Status {
	case EVTCHNSTAT_unbound:
		s.RemoteDom = DomID(le.Uint16(b[16:]))
	case EVTCHNSTAT_interdomain:
		s.RemoteDom = DomID(le.Uint16(b[16:]))
		s.RemotePort = EvtchnPort(le.Uint32(b[20:]))
	case EVTCHNSTAT_pirq, EVTCHNSTAT_virq:
		s.Num = le.Uint32(b[16:])
	}
	return s, nil
}
