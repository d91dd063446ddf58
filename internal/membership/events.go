package membership

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as this host sees it.
//
// There is no "suspect": memberlist does not tell its delegates when it
// suspects a member, so a suspect member shows as alive until it is
// declared failed.
type State int

const (
	StateAlive  State = iota + 1
	StateFailed       // declared dead by the failure detector
	StateLeft         // left gracefully (Leave)
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateFailed:
		return "failed"
	case StateLeft:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is one host of the cluster.
type Member struct {
	Name string
	// Addr is the gossip address, "IP:PORT".
	Addr  string
	State State
	Meta  Meta
	// StateChange is when this host saw State begin.
	StateChange time.Time
}

// EventType says what happened to a member.
type EventType int

const (
	EventJoin   EventType = iota + 1 // became alive: new, or back after failing or leaving
	EventUpdate                      // its Meta or address changed
	EventFailed                      // declared dead: the agent marks its domains dead
	EventLeft                        // left gracefully
	EventReap                        // failed or left longer than ReconnectTimeout; forgotten
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventFailed:
		return "failed"
	case EventLeft:
		return "left"
	case EventReap:
		return "reap"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is a change of one member, with the member as it is after it.
type Event struct {
	Type   EventType
	Member Member
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s %s", e.Type, e.Member.Name, e.Member.Addr)
}

// maxQueuedEvents bounds the events held for a reader that falls behind;
// beyond it the oldest are dropped (Members stays exact).
const maxQueuedEvents = 1 << 14

// eventQueue decouples memberlist's callbacks, which run under its node
// lock and must not block, from the reader of Events.
type eventQueue struct {
	out  chan Event
	wake chan struct{}

	// mu guards the fields below.
	mu      sync.Mutex
	q       []Event
	dropped uint64
}

func newEventQueue() *eventQueue {
	return &eventQueue{out: make(chan Event), wake: make(chan struct{}, 1)}
}

func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	if len(e.q) >= maxQueuedEvents {
		e.q[0] = Event{}
		e.q = e.q[1:]
		e.dropped++
	}
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// run delivers queued events in order until stop is closed, then closes out.
func (e *eventQueue) run(stop <-chan struct{}) {
	defer close(e.out)
	for {
		e.mu.Lock()
		if len(e.q) == 0 {
			e.mu.Unlock()
			select {
			case <-e.wake:
				continue
			case <-stop:
				return
			}
		}
		ev := e.q[0]
		e.q[0] = Event{}
		e.q = e.q[1:]
		e.mu.Unlock()
		select {
		case e.out <- ev:
		case <-stop:
			return
		}
	}
}

// memberFrom converts a memberlist node whose meta was already validated.
func memberFrom(n *memberlist.Node, st State, now time.Time) (Member, bool) {
	wm, _ := decodeMeta(n.Meta)
	return Member{
		Name:        n.Name,
		Addr:        net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		State:       st,
		Meta:        wm.Meta,
		StateChange: now,
	}, wm.Leaving
}
