// Package ticket keeps one-shot tickets that let a browser open a domain's
// console WebSocket. A browser cannot set headers on a WebSocket, so the
// page asks for a ticket over the ordinary API (where a token, once the
// API has one, is checked) and hands it over in the URL instead. A ticket
// names one domain, lives a short while and opens one connection.
//
// The store is pure: the caller passes the time, so tests step it.
package ticket

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// DefaultTTL is how long a ticket stays valid: long enough for a page to
// open its WebSocket, short enough that a leaked URL is soon useless.
const DefaultTTL = 30 * time.Second

// DefaultMax bounds the tickets outstanding at once, so that a client
// asking in a loop cannot make the agent grow.
const DefaultMax = 1024

// Errors of Redeem and Issue.
var (
	// ErrInvalid means the ticket was never issued, or was used already.
	ErrInvalid = errors.New("ticket is not valid (unknown, or used already)")
	// ErrExpired means the ticket was issued but its time ran out.
	ErrExpired = errors.New("ticket has expired")
	// ErrFull means too many tickets are outstanding.
	ErrFull = errors.New("too many console tickets outstanding; try again in a few seconds")
)

// Domain is what a ticket is bound to: one domain, known by id and name.
type Domain struct {
	ID   uint32
	Name string
}

// Matches says whether ref (a name or id, as the API takes) is d.
func (d Domain) Matches(ref string) bool {
	return ref == d.Name || ref == strconv.FormatUint(uint64(d.ID), 10)
}

// Store is a set of outstanding tickets. The zero value is not usable;
// call New.
type Store struct {
	ttl time.Duration
	max int

	// mu guards tickets.
	mu      sync.Mutex
	tickets map[string]entry
}

type entry struct {
	dom     Domain
	expires time.Time
}

// New returns a store whose tickets live ttl, at most max at once.
func New(ttl time.Duration, max int) *Store {
	return &Store{ttl: ttl, max: max, tickets: map[string]entry{}}
}

// Issue returns a new ticket for dom, valid until the returned time.
func (s *Store) Issue(dom Domain, now time.Time) (string, time.Time, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("ticket: %w", err)
	}
	t := base64.RawURLEncoding.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tickets) >= s.max {
		s.sweepLocked(now)
		if len(s.tickets) >= s.max {
			return "", time.Time{}, ErrFull
		}
	}
	exp := now.Add(s.ttl)
	s.tickets[t] = entry{dom: dom, expires: exp}
	return t, exp, nil
}

// Redeem uses up ticket t and returns the domain it was issued for. A
// ticket is gone after its first Redeem, whatever the outcome, so it can
// never open two connections.
func (s *Store) Redeem(t string, now time.Time) (Domain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.tickets[t]
	if !ok {
		return Domain{}, ErrInvalid
	}
	delete(s.tickets, t)
	if !now.Before(e.expires) {
		return Domain{}, ErrExpired
	}
	return e.dom, nil
}

// Len is the number of tickets kept (expired ones included until swept).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tickets)
}

// sweepLocked drops expired tickets.
//
// Preconditions: s.mu is held.
func (s *Store) sweepLocked(now time.Time) {
	for t, e := range s.tickets {
		if !now.Before(e.expires) {
			delete(s.tickets, t)
		}
	}
}
