// Package faultnet injects network faults into the agent's own transports:
// added one-way delay with jitter, datagram loss, and cut links to chosen
// peers. This kernel has no netem, so tests that need a slow or lossy
// network between test hosts get it from here instead.
//
// A *Faults is switched on only by a test flag of the agent. A nil *Faults
// is valid everywhere and means "no faults": every wrapper then returns what
// it was given, so production paths pay nothing.
//
// What each fault applies to:
//
//   - Delay and jitter are added to what this side sends (egress): stream
//     writes and datagrams. Streams keep their byte order under jitter.
//   - Loss drops outgoing datagrams with the given probability. Streams are
//     reliable, so they are never subject to loss.
//   - Block cuts the link to a peer in both directions. Datagrams to or from
//     it are dropped, dials to it hang until their deadline, and a stream
//     that sees the block once stays cut for good (bytes written are
//     discarded, bytes read are thrown away), since a stream that lost bytes
//     in the middle must never resume.
//
// A blocked entry is either a host ("10.77.0.3") matching every port of that
// host, or a "host:port" matching only that address. Hosts are needed for
// real test hosts (accepted streams come from ephemeral ports); host:port
// lets several in-process nodes on 127.0.0.1 cut each other, which then
// needs both sides blocked, since an accepted stream's ephemeral remote
// port cannot be matched.
package faultnet

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBlocked is returned by a dial to a blocked peer once its deadline
// passes.
var ErrBlocked = errors.New("faultnet: peer is blocked")

// Faults is a set of network faults, safe for concurrent use and changeable
// at any time. The zero value has no faults; a nil *Faults is pass-through.
//
// Faults implements flag.Value, so an agent can take it as a test flag:
// see Set for the syntax.
type Faults struct {
	// mu serialises writers; readers load cur without locking.
	mu  sync.Mutex
	cur atomic.Pointer[settings]
}

// settings is an immutable snapshot; writers replace it whole.
type settings struct {
	delay   time.Duration
	jitter  time.Duration
	loss    float64
	blocked map[string]bool
}

func (s *settings) active() bool {
	return s != nil && (s.delay > 0 || s.jitter > 0 || s.loss > 0 || len(s.blocked) > 0)
}

// New returns a Faults with no faults set.
func New() *Faults { return &Faults{} }

func (f *Faults) load() *settings {
	if f == nil {
		return nil
	}
	return f.cur.Load()
}

// update applies fn to a copy of the current settings and publishes it.
func (f *Faults) update(fn func(s *settings)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s settings
	if old := f.cur.Load(); old != nil {
		s = *old
	}
	s.blocked = maps.Clone(s.blocked)
	if s.blocked == nil {
		s.blocked = map[string]bool{}
	}
	fn(&s)
	f.cur.Store(&s)
}

// Active reports whether any fault is set.
func (f *Faults) Active() bool { return f.load().active() }

// SetDelay sets the one-way delay added to everything this side sends, plus
// a uniformly random jitter in [-jitter, +jitter] (never below zero).
func (f *Faults) SetDelay(delay, jitter time.Duration) {
	f.update(func(s *settings) { s.delay, s.jitter = max(delay, 0), max(jitter, 0) })
}

// SetLoss sets the probability (0..1) that an outgoing datagram is dropped.
func (f *Faults) SetLoss(p float64) {
	f.update(func(s *settings) { s.loss = min(max(p, 0), 1) })
}

// Block cuts the links to the given hosts or host:port addresses.
func (f *Faults) Block(peers ...string) {
	f.update(func(s *settings) {
		for _, p := range peers {
			s.blocked[normalize(p)] = true
		}
	})
}

// Unblock restores the links to the given peers. Streams already cut stay
// cut; new ones work.
func (f *Faults) Unblock(peers ...string) {
	f.update(func(s *settings) {
		for _, p := range peers {
			delete(s.blocked, normalize(p))
		}
	})
}

// Reset removes every fault.
func (f *Faults) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur.Store(nil)
}

// normalize makes "[::1]" and "::1" the same host.
func normalize(p string) string {
	p = strings.TrimSpace(p)
	if h, port, err := net.SplitHostPort(p); err == nil {
		return net.JoinHostPort(h, port)
	}
	return strings.TrimSuffix(strings.TrimPrefix(p, "["), "]")
}

// Blocked reports whether the link to addr ("host:port" or a bare host) is
// cut.
func (f *Faults) Blocked(addr string) bool { return f.load().isBlocked(addr) }

func (s *settings) isBlocked(addr string) bool {
	if s == nil || len(s.blocked) == 0 {
		return false
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return s.blocked[h] || s.blocked[addr]
	}
	return s.blocked[normalize(addr)]
}

// sample returns a delay for one send.
func (s *settings) sample() time.Duration {
	if s == nil {
		return 0
	}
	d := s.delay
	if s.jitter > 0 {
		d += time.Duration(rand.Int64N(int64(2*s.jitter)+1)) - s.jitter
	}
	return max(d, 0)
}

// Packet is the hook for datagram transports: called for each datagram sent
// to addr, it says whether to drop it and otherwise how long to hold it back.
// Receivers call Blocked for each datagram that arrives.
func (f *Faults) Packet(addr string) (drop bool, delay time.Duration) {
	s := f.load()
	if !s.active() {
		return false, 0
	}
	if s.isBlocked(addr) {
		return true, 0
	}
	if s.loss > 0 && rand.Float64() < s.loss {
		return true, 0
	}
	return false, s.sample()
}

// String returns the current faults in the syntax Set takes ("" if none).
// String implements flag.Value.String.
func (f *Faults) String() string {
	s := f.load()
	if !s.active() {
		return ""
	}
	var parts []string
	if s.delay > 0 {
		parts = append(parts, "delay="+s.delay.String())
	}
	if s.jitter > 0 {
		parts = append(parts, "jitter="+s.jitter.String())
	}
	if s.loss > 0 {
		parts = append(parts, "loss="+strconv.FormatFloat(s.loss, 'g', -1, 64))
	}
	if len(s.blocked) > 0 {
		b := make([]string, 0, len(s.blocked))
		for k := range s.blocked {
			b = append(b, k)
		}
		slices.Sort(b)
		parts = append(parts, "block="+strings.Join(b, ","))
	}
	return strings.Join(parts, " ")
}

// Set replaces all faults with those in spec: space- or semicolon-separated
// key=value pairs, e.g. "delay=5ms jitter=1ms loss=0.01 block=10.77.0.3,10.77.0.4:7946".
// Keys left out are cleared; "" clears everything.
// Set implements flag.Value.Set.
func (f *Faults) Set(spec string) error {
	var s settings
	s.blocked = map[string]bool{}
	for _, kv := range strings.FieldsFunc(spec, func(r rune) bool { return r == ' ' || r == ';' || r == '\t' }) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("faultnet: %q is not key=value", kv)
		}
		var err error
		switch k {
		case "delay":
			s.delay, err = time.ParseDuration(v)
		case "jitter":
			s.jitter, err = time.ParseDuration(v)
		case "loss":
			s.loss, err = strconv.ParseFloat(v, 64)
			if err == nil && (s.loss < 0 || s.loss > 1) {
				err = errors.New("not in [0,1]")
			}
		case "block":
			for _, p := range strings.Split(v, ",") {
				if p != "" {
					s.blocked[normalize(p)] = true
				}
			}
		default:
			return fmt.Errorf("faultnet: unknown key %q (want delay, jitter, loss, block)", k)
		}
		if err != nil {
			return fmt.Errorf("faultnet: %s: %w", k, err)
		}
		if s.delay < 0 || s.jitter < 0 {
			return fmt.Errorf("faultnet: %s: negative duration", k)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur.Store(&s)
	return nil
}
