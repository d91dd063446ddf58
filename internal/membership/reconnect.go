package membership

import (
	"net"
	"slices"
	"strconv"
	"time"
)

// reconnector decides which addresses the reconnect loop tries and when.
// It is pure: time comes in as arguments, so tests step it by hand.
//
// Targets are the seeds (tried while no live member has their address) and
// the addresses of members lost (failed or left), tried until the member
// is alive again or timeout has passed since it was lost. After each try a
// target waits interval << tries, capped at maxBackoff.
type reconnector struct {
	interval, maxBackoff, timeout time.Duration
	self                          string // our own address: never a target
	targets                       map[string]*target
}

type target struct {
	seed   bool      // from Config.Join: never expires
	name   string    // the member lost at this address, if any
	lostAt time.Time // when that member was lost
	up     bool      // a live member has this address
	tries  int
	next   time.Time
}

func newReconnector(seeds []string, self string, interval, maxBackoff, timeout time.Duration) *reconnector {
	r := &reconnector{interval: interval, maxBackoff: maxBackoff, timeout: timeout, self: self, targets: map[string]*target{}}
	for _, s := range seeds {
		r.targets[s] = &target{seed: true}
	}
	return r
}

// lost records that member name at addr failed or left.
func (r *reconnector) lost(name, addr string, now time.Time) {
	t := r.targets[addr]
	if t == nil {
		t = &target{}
		r.targets[addr] = t
	}
	t.name, t.lostAt, t.up, t.tries = name, now, false, 0
	t.next = now.Add(r.interval)
}

// conflict records that a host calling itself name is at addr while we
// still hold an older entry for that name; once the old one may be
// reclaimed (at reclaimAt), joining addr brings the host back.
func (r *reconnector) conflict(name, addr string, reclaimAt, now time.Time) {
	if t := r.targets[addr]; t != nil && t.up {
		return
	}
	r.lost(name, addr, now)
	r.targets[addr].next = reclaimAt
}

// found records that member name is alive at addr: stop trying that
// address and any older address of the same name.
func (r *reconnector) found(name, addr string) {
	for a, t := range r.targets {
		if a != addr && (t.name == "" || t.name != name) {
			continue
		}
		if !t.seed {
			delete(r.targets, a)
			continue
		}
		t.name, t.lostAt, t.tries, t.next = "", time.Time{}, 0, time.Time{}
		t.up = a == addr
	}
}

// due returns the addresses to try now, in order, and forgets lost members
// older than timeout.
func (r *reconnector) due(now time.Time) []string {
	var out []string
	for a, t := range r.targets {
		if !t.seed && now.Sub(t.lostAt) > r.timeout {
			delete(r.targets, a)
			continue
		}
		if t.up || a == r.self || now.Before(t.next) {
			continue
		}
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// tried records an attempt on addr; the target stays until found.
func (r *reconnector) tried(addr string, now time.Time) {
	t := r.targets[addr]
	if t == nil {
		return
	}
	t.tries++
	wait := r.maxBackoff
	if t.tries < 30 {
		wait = min(r.interval<<t.tries, r.maxBackoff)
	}
	t.next = now.Add(wait)
}

// withPort adds port to an address given without one.
func withPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}
