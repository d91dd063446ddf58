package blkif

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"shi/guest/xs"
)

// State is a xenbus state (xen/include/public/io/xenbus.h), the value of
// each end's state key.
type State uint8

// XenbusState values.
const (
	StateUnknown       State = 0
	StateInitialising  State = 1
	StateInitWait      State = 2
	StateInitialised   State = 3
	StateConnected     State = 4
	StateClosing       State = 5
	StateClosed        State = 6
	StateReconfiguring State = 7
	StateReconfigured  State = 8
)

var stateNames = [...]string{"Unknown", "Initialising", "InitWait", "Initialised", "Connected",
	"Closing", "Closed", "Reconfiguring", "Reconfigured"}

// String is the state's name ("Connected").
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// String10 is the state as its key holds it: decimal ("4").
func (s State) String10() string { return strconv.Itoa(int(s)) }

// Closing reports whether s means the end is going away (5 or 6).
func (s State) Closing() bool { return s == StateClosing || s == StateClosed }

// ParseState reads a state key's value.
func ParseState(v []byte) (State, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 8)
	if err != nil || n > uint64(StateReconfigured) {
		return 0, fmt.Errorf("blkif: bad state %q", v)
	}
	return State(n), nil
}

// ErrGone means a directory's state key is missing: its device was
// removed (or never made). It wraps syscall.ENOENT.
var ErrGone = fmt.Errorf("blkif: the device's directory is gone: %w", syscall.ENOENT)

// ReadState reads dir's state key. A key that is missing, or that this
// domain may no longer read, is ErrGone: XenStore answers EACCES, not
// ENOENT, for a node under a removed directory whose remaining ancestors
// this domain may not read (a domain's home, once the domain is gone).
func ReadState(xc *xs.Client, dir string) (State, error) {
	v, err := xc.Read(dir + "/" + KeyState)
	if errors.Is(err, syscall.ENOENT) {
		return 0, ErrGone
	}
	if errors.Is(err, syscall.EACCES) {
		return 0, fmt.Errorf("%w (%s may not be read: %v)", ErrGone, dir, err)
	}
	if err != nil {
		return 0, fmt.Errorf("blkif: read %s/%s: %w", dir, KeyState, err)
	}
	return ParseState(v)
}

// WriteState writes dir's state key.
func WriteState(xc *xs.Client, dir string, s State) error {
	if err := xc.Write(dir+"/"+KeyState, []byte(s.String10())); err != nil {
		return fmt.Errorf("blkif: write %s/%s: %w", dir, KeyState, err)
	}
	return nil
}

// WriteError records why this end gives up, for a person, in dir's error
// key, then moves it to StateClosed.
func WriteError(xc *xs.Client, dir string, msg string) error {
	return errors.Join(xc.Write(dir+"/"+KeyError, []byte(msg)), WriteState(xc, dir, StateClosed))
}

// ReadError is dir's error key, or "" if it has none.
func ReadError(xc *xs.Client, dir string) string {
	v, err := xc.Read(dir + "/" + KeyError)
	if err != nil {
		return ""
	}
	return string(v)
}

// watchSeq makes watch tokens distinct within a process: every event
// carrying a token goes to each watch holding it.
var watchSeq atomic.Uint64

// recheck bounds a wait between watch events: events are hints, and a
// missed one is found here.
const recheck = time.Second

// WaitState waits until dir's state satisfies done and returns it. It
// fails with ErrGone if the state key goes (or is missing), and with
// ctx's error when ctx ends. The watch is set before the first read, so
// no change between the two is lost.
func WaitState(ctx context.Context, xc *xs.Client, dir string, done func(State) bool) (State, error) {
	w, err := xc.Watch(dir+"/"+KeyState, "blkif-state-"+strconv.FormatUint(watchSeq.Add(1), 10))
	if err != nil {
		return 0, fmt.Errorf("blkif: watch %s: %w", dir, err)
	}
	defer xc.Unwatch(w)
	t := time.NewTimer(recheck)
	defer t.Stop()
	for {
		s, err := ReadState(xc, dir)
		if err != nil {
			return 0, err
		}
		if done(s) {
			return s, nil
		}
		t.Reset(recheck)
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case _, ok := <-w.Events():
			if !ok {
				return s, fmt.Errorf("blkif: watch of %s ended: %v", dir, xc.Err())
			}
		case <-t.C:
		}
	}
}

// StateIs returns a WaitState condition: the state is one of want.
func StateIs(want ...State) func(State) bool {
	return func(s State) bool {
		for _, w := range want {
			if s == w {
				return true
			}
		}
		return false
	}
}
