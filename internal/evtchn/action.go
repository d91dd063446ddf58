package evtchn

import "fmt"

// Action is something the agent must do after a table operation. The
// concrete types are Open, Connect, Kick, Disconnect, Release and Forward;
// carry them out in the order returned.
type Action interface {
	fmt.Stringer
	isAction()
}

// Open: create the eventfd behind Dom:Port and hand it to Dom, which reads
// it to learn that the port is pending.
type Open struct {
	Dom  DomID
	Port Port
}

// Connect: give Dom the doorbell for its port Port, so that its sends
// reach Peer: the eventfd behind Peer for a local peer, the agent (which
// forwards) for a remote one. For an IPI port Peer is the port itself.
type Connect struct {
	Dom  DomID
	Port Port
	Peer Endpoint
}

// Kick: make Dom:Port pending, i.e. write 1 to its eventfd.
type Kick struct {
	Dom  DomID
	Port Port
}

// Disconnect: Dom:Port is unbound again because its peer closed; tell Dom
// to drop the doorbell. Sends that race with this land on the stale
// eventfd, where nobody reads them: they are lost, as on an unbound port.
type Disconnect struct {
	Dom  DomID
	Port Port
}

// Release: Dom:Port is closed; the agent drops its copy of the port's
// eventfd (and tells Dom, if Dom did not close the port itself).
type Release struct {
	Dom  DomID
	Port Port
}

// Forward: send Msg to the agent on Host, which applies it with Deliver.
type Forward struct {
	Host Host
	Msg  Message
}

// Op is a cross-host event-channel operation.
type Op uint8

// Cross-host operations.
const (
	OpSend Op = iota + 1
	OpClose
)

func (o Op) String() string {
	switch o {
	case OpSend:
		return "send"
	case OpClose:
		return "close"
	}
	return fmt.Sprintf("op%d", uint8(o))
}

// Message is one cross-host operation: From (on the sending host) acts on
// To (on the receiving host).
type Message struct {
	Op       Op
	To, From Endpoint
}

func (Open) isAction()       {}
func (Connect) isAction()    {}
func (Kick) isAction()       {}
func (Disconnect) isAction() {}
func (Release) isAction()    {}
func (Forward) isAction()    {}

func (a Open) String() string    { return fmt.Sprintf("open %d:%d", a.Dom, a.Port) }
func (a Connect) String() string { return fmt.Sprintf("connect %d:%d -> %v", a.Dom, a.Port, a.Peer) }
func (a Kick) String() string    { return fmt.Sprintf("kick %d:%d", a.Dom, a.Port) }
func (a Disconnect) String() string {
	return fmt.Sprintf("disconnect %d:%d", a.Dom, a.Port)
}
func (a Release) String() string { return fmt.Sprintf("release %d:%d", a.Dom, a.Port) }
func (a Forward) String() string {
	return fmt.Sprintf("forward %s: %v %v -> %v", a.Host, a.Msg.Op, a.Msg.From, a.Msg.To)
}
