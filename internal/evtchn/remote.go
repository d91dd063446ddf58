package evtchn

import "syscall"

// The cross-host half of the table. Binding to a domain on another host is
// a handshake between the two agents:
//
//  1. BindInterdomain on the binder's host returns *RemoteDomainError.
//  2. The binder's agent asks the remote agent, which calls
//     AcceptRemoteBind: the port must be unbound and reserved for the
//     binder, exactly as for a local bind.
//  3. On success the binder's agent calls BindRemote, which allocates the
//     local port and marks it pending.
//
// Afterwards sends and closes on either end turn into Forward actions, and
// the receiving agent applies them with Deliver.

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

// BindRemote completes a cross-host bind on the binder's host, after the
// peer's agent accepted it: a new port of caller, bound to peer and pending.
func (t *Table) BindRemote(caller DomID, peer Endpoint) (Port, []Action, error) {
	d, err := t.caller(caller)
	if err != nil {
		return 0, nil, err
	}
	if peer.Host == Local {
		return 0, nil, errorf(syscall.EINVAL, "remote bind to a local endpoint %v", peer)
	}
	p, err := d.freePort()
	if err != nil {
		return 0, nil, err
	}
	d.ports[p] = portInfo{state: Interdomain, remote: peer}
	return p, []Action{Open{caller, p}, Connect{caller, p, peer}, Kick{caller, p}}, nil
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
