package evtchn

import (
	"fmt"
	"slices"
	"syscall"

	"shi/internal/abi"
)

type (
	// DomID is a domain id (domid_t).
	DomID = abi.DomID
	// Port is an event-channel port (evtchn_port_t).
	Port = abi.EvtchnPort
)

// Host names the agent a domain runs on; Local ("") is this table's host.
type Host string

// Local is the host of the table itself.
const Local Host = ""

// Endpoint is one end of an interdomain channel.
type Endpoint struct {
	Host Host
	Dom  DomID
	Port Port
}

func (e Endpoint) String() string {
	if e.Host == Local {
		return fmt.Sprintf("%d:%d", e.Dom, e.Port)
	}
	return fmt.Sprintf("%s/%d:%d", e.Host, e.Dom, e.Port)
}

// State is a port's state, numbered as EVTCHNSTAT_*.
type State uint8

// Port states; pirq is not supported.
const (
	Closed      State = abi.EVTCHNSTAT_closed
	Unbound     State = abi.EVTCHNSTAT_unbound
	Interdomain State = abi.EVTCHNSTAT_interdomain
	VIRQ        State = abi.EVTCHNSTAT_virq
	IPI         State = abi.EVTCHNSTAT_ipi

	// reserved is a port allocated for a cross-host bind still in flight
	// (ReserveRemote): taken, but closed to every operation.
	reserved State = 0xff
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Unbound:
		return "unbound"
	case Interdomain:
		return "interdomain"
	case VIRQ:
		return "virq"
	case IPI:
		return "ipi"
	}
	return fmt.Sprintf("state%d", uint8(s))
}

// Locator finds the host of a domain that is not on this one, for the
// cross-host bind. ok is false for a domain that does not exist anywhere.
type Locator interface {
	Locate(dom DomID) (h Host, ok bool)
}

// RemoteDomainError is returned by BindInterdomain when the remote domain
// lives on another host: the agent must run the cross-host handshake
// (ReserveRemote here, AcceptRemoteBind there, then CompleteRemote here).
type RemoteDomainError struct {
	Dom  DomID
	Host Host
}

func (e *RemoteDomainError) Error() string {
	return fmt.Sprintf("evtchn: dom%d is on host %q", e.Dom, e.Host)
}

// DomainConfig is what the table needs to know about a domain.
type DomainConfig struct {
	// MaxPorts bounds the domain's port numbers to [1, MaxPorts). Zero or
	// anything above the 2-level ABI's 4096 means 4096.
	MaxPorts int
	// Privileged domains (dom0, the driver domain) may allocate, reset and
	// query ports of other domains.
	Privileged bool
}

// portInfo is one port's record; the zero value is a closed port.
type portInfo struct {
	state  State
	remote Endpoint // unbound: remote.Dom may bind; interdomain: the peer
	virq   uint32
}

type domain struct {
	id         DomID
	max        int
	privileged bool
	ports      []portInfo // index is the port number; ports[0] is reserved
	virqs      map[uint32]Port
}

// Table holds the ports of every domain on one host.
type Table struct {
	doms   map[DomID]*domain
	locate Locator
}

// New returns an empty table. locate may be nil, in which case a domain not
// on this host does not exist.
func New(locate Locator) *Table {
	return &Table{doms: make(map[DomID]*domain), locate: locate}
}

func errorf(errno syscall.Errno, format string, args ...any) error {
	return fmt.Errorf("evtchn: "+format+": %w", append(args, errno)...)
}

// AddDomain registers a new local domain with no ports.
func (t *Table) AddDomain(dom DomID, cfg DomainConfig) error {
	if dom >= abi.DOMID_FIRST_RESERVED {
		return errorf(syscall.EINVAL, "dom%d is a reserved id", dom)
	}
	if t.doms[dom] != nil {
		return errorf(syscall.EEXIST, "dom%d already exists", dom)
	}
	max := cfg.MaxPorts
	if max <= 0 || max > abi.EVTCHN_2L_NR_CHANNELS {
		max = abi.EVTCHN_2L_NR_CHANNELS
	}
	t.doms[dom] = &domain{id: dom, max: max, privileged: cfg.Privileged, ports: make([]portInfo, 1), virqs: map[uint32]Port{}}
	return nil
}

// RemoveDomain closes every port of a dying domain and forgets it. Its
// peers' ports go back to unbound, still reserved for it, as in Xen.
func (t *Table) RemoveDomain(dom DomID) []Action {
	d := t.doms[dom]
	if d == nil {
		return nil
	}
	acts := t.closeAll(d)
	delete(t.doms, dom)
	return acts
}

// sortedDoms lists the domains in id order, so that actions over several
// domains come out in a reproducible order.
func (t *Table) sortedDoms() []DomID {
	ids := make([]DomID, 0, len(t.doms))
	for id := range t.doms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// resolve maps DOMID_SELF to the caller and checks that caller may act on
// dom (itself, or any domain if privileged).
func (t *Table) resolve(caller, dom DomID) (*domain, error) {
	if dom == abi.DOMID_SELF {
		dom = caller
	}
	d := t.doms[dom]
	if d == nil {
		return nil, errorf(syscall.ESRCH, "dom%d: no such domain", dom)
	}
	if dom != caller {
		if c := t.doms[caller]; c == nil || !c.privileged {
			return nil, errorf(syscall.EPERM, "dom%d may not act on dom%d", caller, dom)
		}
	}
	return d, nil
}

func (t *Table) caller(caller DomID) (*domain, error) { return t.resolve(caller, caller) }

// freePort is get_free_port: the lowest closed port above 0.
func (d *domain) freePort() (Port, error) {
	for p := 1; p < len(d.ports); p++ {
		if d.ports[p].state == Closed {
			return Port(p), nil
		}
	}
	if len(d.ports) < d.max {
		d.ports = append(d.ports, portInfo{})
		return Port(len(d.ports) - 1), nil
	}
	return 0, errorf(syscall.ENOSPC, "dom%d has no free port (max %d)", d.id, d.max)
}

// port returns the record of an open port (neither closed nor reserved),
// or nil.
func (d *domain) port(p Port) *portInfo {
	if p == 0 || int64(p) >= int64(len(d.ports)) || d.ports[p].state == Closed || d.ports[p].state == reserved {
		return nil
	}
	return &d.ports[p]
}

// AllocUnbound is EVTCHNOP_alloc_unbound: a new port in dom that only
// remote may bind. dom and remote may be DOMID_SELF. remote need not exist.
func (t *Table) AllocUnbound(caller, dom, remote DomID) (Port, []Action, error) {
	d, err := t.resolve(caller, dom)
	if err != nil {
		return 0, nil, err
	}
	if remote == abi.DOMID_SELF {
		remote = caller
	}
	p, err := d.freePort()
	if err != nil {
		return 0, nil, err
	}
	d.ports[p] = portInfo{state: Unbound, remote: Endpoint{Dom: remote}}
	return p, []Action{Open{d.id, p}}, nil
}

// BindInterdomain is EVTCHNOP_bind_interdomain: bind a new port of caller
// to remoteDom:remotePort, which must be unbound and reserved for caller.
// The new port starts pending, covering sends made before the bind.
func (t *Table) BindInterdomain(caller, remoteDom DomID, remotePort Port) (Port, []Action, error) {
	l, err := t.caller(caller)
	if err != nil {
		return 0, nil, err
	}
	if remoteDom == abi.DOMID_SELF {
		remoteDom = caller
	}
	r := t.doms[remoteDom]
	if r == nil {
		if t.locate != nil {
			if h, ok := t.locate.Locate(remoteDom); ok && h != Local {
				return 0, nil, &RemoteDomainError{Dom: remoteDom, Host: h}
			}
		}
		return 0, nil, errorf(syscall.ESRCH, "dom%d: no such domain", remoteDom)
	}
	rp := r.port(remotePort)
	if rp == nil || rp.state != Unbound || rp.remote.Dom != caller {
		return 0, nil, errorf(syscall.EINVAL, "dom%d port %d is not unbound for dom%d", remoteDom, remotePort, caller)
	}
	lp, err := l.freePort()
	if err != nil {
		return 0, nil, err
	}
	local := Endpoint{Dom: caller, Port: lp}
	peer := Endpoint{Dom: remoteDom, Port: remotePort}
	l.ports[lp] = portInfo{state: Interdomain, remote: peer}
	r.ports[remotePort] = portInfo{state: Interdomain, remote: local}
	return lp, []Action{
		Open{caller, lp},
		Connect{caller, lp, peer},
		Connect{remoteDom, remotePort, local},
		Kick{caller, lp},
	}, nil
}

// BindIPI is EVTCHNOP_bind_ipi: a port on which the domain signals itself.
// Domains have one vCPU, 0.
func (t *Table) BindIPI(caller DomID, vcpu uint32) (Port, []Action, error) {
	d, err := t.caller(caller)
	if err != nil {
		return 0, nil, err
	}
	if vcpu != 0 {
		return 0, nil, errorf(syscall.ENOENT, "dom%d has no vcpu %d", caller, vcpu)
	}
	p, err := d.freePort()
	if err != nil {
		return 0, nil, err
	}
	self := Endpoint{Dom: caller, Port: p}
	d.ports[p] = portInfo{state: IPI, remote: self}
	return p, []Action{Open{caller, p}, Connect{caller, p, self}}, nil
}

// BindVIRQ is EVTCHNOP_bind_virq: a port the agent raises for a virtual
// interrupt (RaiseVIRQ). One port per virq.
func (t *Table) BindVIRQ(caller DomID, virq, vcpu uint32) (Port, []Action, error) {
	d, err := t.caller(caller)
	if err != nil {
		return 0, nil, err
	}
	if virq >= abi.NR_VIRQS {
		return 0, nil, errorf(syscall.EINVAL, "virq %d out of range", virq)
	}
	if vcpu != 0 {
		return 0, nil, errorf(syscall.ENOENT, "dom%d has no vcpu %d", caller, vcpu)
	}
	if _, ok := d.virqs[virq]; ok {
		return 0, nil, errorf(syscall.EEXIST, "dom%d virq %d already bound", caller, virq)
	}
	p, err := d.freePort()
	if err != nil {
		return 0, nil, err
	}
	d.ports[p] = portInfo{state: VIRQ, virq: virq}
	d.virqs[virq] = p
	return p, []Action{Open{caller, p}}, nil
}

// RaiseVIRQ makes the domain's port for virq pending, if it bound one.
func (t *Table) RaiseVIRQ(dom DomID, virq uint32) []Action {
	if d := t.doms[dom]; d != nil {
		if p, ok := d.virqs[virq]; ok {
			return []Action{Kick{dom, p}}
		}
	}
	return nil
}

// Close is EVTCHNOP_close. If the port was interdomain, the peer's port
// returns to unbound, reserved for caller, so that it can bind again.
func (t *Table) Close(caller DomID, port Port) ([]Action, error) {
	d, err := t.caller(caller)
	if err != nil {
		return nil, err
	}
	if d.port(port) == nil {
		return nil, errorf(syscall.EINVAL, "dom%d port %d is not open", caller, port)
	}
	return t.close(d, port), nil
}

// close frees an allocated port and returns what the agent must do.
func (t *Table) close(d *domain, port Port) []Action {
	pi := d.ports[port]
	d.ports[port] = portInfo{}
	if pi.state == reserved {
		return nil // no eventfd yet; the agent aborts the handshake
	}
	me := Endpoint{Dom: d.id, Port: port}
	acts := []Action{Release{d.id, port}}
	switch pi.state {
	case VIRQ:
		delete(d.virqs, pi.virq)
	case Interdomain:
		if pi.remote.Host != Local {
			return append(acts, Forward{pi.remote.Host, Message{Op: OpClose, To: pi.remote, From: me}})
		}
		// The peer is another port of ours or another local domain.
		if r := t.doms[pi.remote.Dom]; r != nil {
			if rp := r.port(pi.remote.Port); rp != nil && rp.state == Interdomain && rp.remote == me {
				*rp = portInfo{state: Unbound, remote: Endpoint{Dom: d.id}}
				acts = append(acts, Disconnect{pi.remote.Dom, pi.remote.Port})
			}
		}
	}
	return acts
}

func (t *Table) closeAll(d *domain) []Action {
	var acts []Action
	for p := 1; p < len(d.ports); p++ {
		if d.ports[p].state != Closed {
			acts = append(acts, t.close(d, Port(p))...)
		}
	}
	d.ports = d.ports[:1]
	return acts
}

// Reset is EVTCHNOP_reset: close every port of dom.
func (t *Table) Reset(caller, dom DomID) ([]Action, error) {
	d, err := t.resolve(caller, dom)
	if err != nil {
		return nil, err
	}
	return t.closeAll(d), nil
}

// Send is EVTCHNOP_send done by the agent: a send to a remote peer, or on
// behalf of a domain without the peer's doorbell. Sends on an unbound port
// are dropped without error, as in Xen.
func (t *Table) Send(caller DomID, port Port) ([]Action, error) {
	d, err := t.caller(caller)
	if err != nil {
		return nil, err
	}
	pi := d.port(port)
	if pi == nil {
		return nil, errorf(syscall.EINVAL, "dom%d port %d is not open", caller, port)
	}
	switch pi.state {
	case Unbound:
		return nil, nil
	case IPI:
		return []Action{Kick{caller, port}}, nil
	case Interdomain:
		if pi.remote.Host != Local {
			return []Action{Forward{pi.remote.Host, Message{Op: OpSend, To: pi.remote, From: Endpoint{Dom: caller, Port: port}}}}, nil
		}
		return []Action{Kick{pi.remote.Dom, pi.remote.Port}}, nil
	}
	return nil, errorf(syscall.EINVAL, "dom%d port %d is %v: cannot send", caller, port, pi.state)
}

// Status is EVTCHNOP_status. A domain may ask about its own ports;
// privileged domains about anyone's. Dom in the result is the resolved id.
func (t *Table) Status(caller, dom DomID, port Port) (abi.EvtchnStatus, error) {
	d, err := t.resolve(caller, dom)
	if err != nil {
		return abi.EvtchnStatus{}, err
	}
	if int(port) >= d.max {
		return abi.EvtchnStatus{}, errorf(syscall.EINVAL, "dom%d port %d out of range", d.id, port)
	}
	st := abi.EvtchnStatus{Dom: d.id, Port: port, Status: abi.EVTCHNSTAT_closed}
	pi := d.port(port)
	if pi == nil {
		return st, nil
	}
	st.Status = uint32(pi.state)
	switch pi.state {
	case Unbound:
		st.RemoteDom = pi.remote.Dom
	case Interdomain:
		st.RemoteDom, st.RemotePort = pi.remote.Dom, pi.remote.Port
	case VIRQ:
		st.Num = pi.virq
	}
	return st, nil
}

// StatusOf is Status for a privileged caller of another host, whose
// agent checked its privilege.
func (t *Table) StatusOf(dom DomID, port Port) (abi.EvtchnStatus, error) {
	return t.Status(dom, dom, port) // as dom itself: no privilege needed
}

// PortInfo describes one open port, for listings and tests.
type PortInfo struct {
	Port   Port
	State  State
	Remote Endpoint // unbound: who may bind (Dom only); interdomain: the peer
	VIRQ   uint32
}

// Ports lists a domain's open ports in port order.
func (t *Table) Ports(dom DomID) []PortInfo {
	d := t.doms[dom]
	if d == nil {
		return nil
	}
	var out []PortInfo
	for p, pi := range d.ports {
		if pi.state != Closed && pi.state != reserved {
			out = append(out, PortInfo{Port: Port(p), State: pi.state, Remote: pi.remote, VIRQ: pi.virq})
		}
	}
	return out
}
