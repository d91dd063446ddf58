package evtchn

import "syscall"

// The cross-host half of the table. Binding to a domain on another host is
// a two-phase handshake between the two agents, so that each side knows
// the other's port before either is bound:
//
//  1. BindInterdomain on the binder's host returns *RemoteDomainError.
//     The binder's agent calls ReserveRemote: the binder's new port is
//     allocated but stays invisible (closed to every operation) while the
//     handshake runs, so its number is known.
//  2. The binder's agent asks the remote agent, which calls
//     AcceptRemoteBind with the binder's endpoint: the port must be
//     unbound and reserved for the binder, exactly as for a local bind.
//  3. On success the binder's agent calls CompleteRemote (the reserved
//     port becomes interdomain and pending); on refusal, or if the remote
//     host dies first, AbortRemote frees it.
//
// Afterwards sends and closes on either end turn into Forward actions, and
// the receiving agent applies them with Deliver. A remote domain or host
// that goes away without closing is dropped with DropDomain or DropHost:
// the ports bound to it go back to unbound and are kicked, as when a peer
// closes.

// ReserveRemote allocates a port of caller for a cross-host bind to
// remoteDom. The port is invisible until CompleteRemote or AbortRemote.
func (t *Table) ReserveRemote(caller, remoteDom DomID) (Port, error) {
	d, err := t.caller(caller)
	if err != nil {
		return 0, err
	}
	p, err := d.freePort()
	if err != nil {
		return 0, err
	}
	d.ports[p] = portInfo{state: reserved, remote: Endpoint{Dom: remoteDom}}
	return p, nil
}

// CompleteRemote binds caller's reserved port to peer, after peer's agent
// accepted: the port is interdomain and pending, covering sends made
// before the bind.
func (t *Table) CompleteRemote(caller DomID, port Port, peer Endpoint) ([]Action, error) {
	d := t.doms[caller]
	if d == nil {
		return nil, errorf(syscall.ESRCH, "dom%d: no such domain", caller)
	}
	if peer.Host == Local {
		return nil, errorf(syscall.EINVAL, "remote bind to a local endpoint %v", peer)
	}
	if int64(port) >= int64(len(d.ports)) || d.ports[port].state != reserved || d.ports[port].remote.Dom != peer.Dom {
		return nil, errorf(syscall.EINVAL, "dom%d port %d is not reserved for %v", caller, port, peer)
	}
	d.ports[port] = portInfo{state: Interdomain, remote: peer}
	return []Action{Open{caller, port}, Connect{caller, port, peer}, Kick{caller, port}}, nil
}

// AbortRemote frees a port reserved by ReserveRemote; it does nothing if
// the port is not reserved (the domain died meanwhile).
func (t *Table) AbortRemote(caller DomID, port Port) {
	if d := t.doms[caller]; d != nil && int64(port) < int64(len(d.ports)) && d.ports[port].state == reserved {
		d.ports[port] = portInfo{}
	}
}

// AcceptRemoteBind links the local unbound port dom:port to the peer from
// on another host. It fails with EINVAL unless the port is unbound and
// reserved for from.Dom.
func (t *Table) AcceptRemoteBind(dom DomID, port Port, from Endpoint) ([]Action, error) {
	d := t.doms[dom]
	if d == nil {
		return nil, errorf(syscall.ESRCH, "dom%d: no such domain", dom)
	}
	if from.Host == Local {
		return nil, errorf(syscall.EINVAL, "remote bind from a local endpoint %v", from)
	}
	pi := d.port(port)
	if pi == nil || pi.state != Unbound || pi.remote.Dom != from.Dom {
		return nil, errorf(syscall.EINVAL, "dom%d port %d is not unbound for dom%d", dom, port, from.Dom)
	}
	*pi = portInfo{state: Interdomain, remote: from}
	return []Action{Connect{dom, port, from}}, nil
}

// Deliver applies a message forwarded by the agent of msg.From.Host. A
// send to a port no longer bound to the sender is dropped, as a send to an
// unbound port is in Xen.
func (t *Table) Deliver(from Host, msg Message) []Action {
	msg.From.Host = from
	d := t.doms[msg.To.Dom]
	if d == nil {
		return nil
	}
	pi := d.port(msg.To.Port)
	if pi == nil || pi.state != Interdomain || pi.remote != msg.From {
		return nil
	}
	switch msg.Op {
	case OpSend:
		return []Action{Kick{msg.To.Dom, msg.To.Port}}
	case OpClose:
		*pi = portInfo{state: Unbound, remote: Endpoint{Dom: msg.From.Dom}}
		return []Action{Disconnect{msg.To.Dom, msg.To.Port}}
	}
	return nil
}

// DropDomain unbinds every local port bound to dom on host, as if dom had
// closed them all: its host told us it died, or the directory says so.
func (t *Table) DropDomain(host Host, dom DomID) []Action {
	return t.drop(func(e Endpoint) bool { return e.Host == host && e.Dom == dom })
}

// DropHost unbinds every local port bound to a domain of host: the host
// is dead.
func (t *Table) DropHost(host Host) []Action {
	return t.drop(func(e Endpoint) bool { return e.Host == host })
}

func (t *Table) drop(match func(Endpoint) bool) []Action {
	var acts []Action
	for _, id := range t.sortedDoms() {
		d := t.doms[id]
		for p := 1; p < len(d.ports); p++ {
			pi := &d.ports[p]
			if pi.state == Interdomain && pi.remote.Host != Local && match(pi.remote) {
				*pi = portInfo{state: Unbound, remote: Endpoint{Dom: pi.remote.Dom}}
				acts = append(acts, Disconnect{id, Port(p)})
			}
		}
	}
	return acts
}
