package hypervisor

import (
	"errors"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"shi/internal/shm"
)

// maxQueued bounds the messages waiting for a domain that does not read
// its connection. Replies are bounded by the request loop waiting for
// room (see serve), notifications by the domain's own ports and mappings;
// past this bound the domain is misbehaving and is disconnected.
const (
	maxQueued    = 4096
	replyBacklog = 64 // the request loop pauses while this many wait
)

type outmsg struct {
	b   []byte
	fds []int // owned: closed once sent or dropped
}

func (m outmsg) release() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
}

// outbox orders the messages to one domain: replies and notifications go
// out in the order they were pushed. A push sends at once (without
// blocking) when nothing is queued; otherwise the run goroutine sends.
type outbox struct {
	conn *net.UnixConn
	raw  interface {
		Write(func(fd uintptr) bool) error
	}

	// mu guards the fields below.
	mu     sync.Mutex
	q      []outmsg
	busy   bool // run is sending q[0]
	dead   bool // closed or overflowed: drop everything
	wake   chan struct{}
	room   chan struct{} // signalled when the queue shrinks
	closed chan struct{}
}

func newOutbox(c *net.UnixConn) *outbox {
	o := &outbox{conn: c, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), closed: make(chan struct{})}
	if rc, err := c.SyscallConn(); err == nil {
		o.raw = rc
	}
	return o
}

// errOverflow is why a domain that stopped reading was disconnected.
var errOverflow = errors.New("hypervisor: domain does not read its connection")

// push queues b with fds (which the outbox now owns). It never blocks.
func (o *outbox) push(b []byte, fds []int) error {
	m := outmsg{b: b, fds: fds}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		m.release()
		return net.ErrClosed
	}
	if !o.busy && len(o.q) == 0 && o.trySend(m) {
		m.release()
		return nil
	}
	if len(o.q) >= maxQueued {
		m.release()
		o.dieLocked()
		return errOverflow
	}
	o.q = append(o.q, m)
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// trySend sends m without blocking; false means it must be queued.
func (o *outbox) trySend(m outmsg) bool {
	if o.raw == nil {
		return false
	}
	var oob []byte
	if len(m.fds) > 0 {
		oob = unix.UnixRights(m.fds...)
	}
	var err error
	if o.raw.Write(func(fd uintptr) bool {
		err = unix.Sendmsg(int(fd), m.b, oob, nil, unix.MSG_DONTWAIT)
		return true
	}) != nil {
		return false
	}
	return err == nil
}

// pending is how many messages wait.
func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q)
}

// run sends queued messages until the outbox is closed.
func (o *outbox) run() {
	for {
		o.mu.Lock()
		for len(o.q) == 0 && !o.dead {
			o.mu.Unlock()
			select {
			case <-o.wake:
			case <-o.closed:
			}
			o.mu.Lock()
		}
		if o.dead {
			o.mu.Unlock()
			return
		}
		m := o.q[0]
		o.q[0] = outmsg{}
		o.q = o.q[1:]
		o.busy = true // keeps push from overtaking m
		o.mu.Unlock()
		err := shm.SendMsg(o.conn, m.b, m.fds...)
		m.release()
		o.mu.Lock()
		o.busy = false
		if err != nil {
			o.dieLocked()
		}
		o.mu.Unlock()
		select {
		case o.room <- struct{}{}:
		default:
		}
	}
}

// dieLocked drops everything queued.
// Preconditions: o.mu held.
func (o *outbox) dieLocked() {
	if o.dead {
		return
	}
	o.dead = true
	for _, m := range o.q {
		m.release()
	}
	o.q = nil
	close(o.closed)
	select {
	case o.room <- struct{}{}:
	default:
	}
}

func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dieLocked()
}

// isDead reports whether the outbox stopped.
func (o *outbox) isDead() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dead
}
