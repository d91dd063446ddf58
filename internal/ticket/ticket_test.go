package ticket

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)

func TestOneShot(t *testing.T) {
	s := New(30*time.Second, 10)
	web := Domain{ID: 7, Name: "web"}
	tk, exp, err := s.Issue(web, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("expires %v, want %v", exp, t0.Add(30*time.Second))
	}
	got, err := s.Redeem(tk, t0.Add(time.Second))
	if err != nil || got != web {
		t.Fatalf("first redeem: %+v %v", got, err)
	}
	if _, err := s.Redeem(tk, t0.Add(2*time.Second)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second redeem: %v, want ErrInvalid", err)
	}
	if s.Len() != 0 {
		t.Errorf("%d tickets kept after use", s.Len())
	}
}

func TestExpiry(t *testing.T) {
	s := New(30*time.Second, 10)
	tk, _, _ := s.Issue(Domain{ID: 1, Name: "a"}, t0)
	tk2, _, _ := s.Issue(Domain{ID: 1, Name: "a"}, t0)
	if _, err := s.Redeem(tk, t0.Add(30*time.Second)); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
	// An expired ticket is used up too.
	if _, err := s.Redeem(tk, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("after expiry: %v, want ErrInvalid", err)
	}
	if _, err := s.Redeem(tk2, t0.Add(30*time.Second-time.Nanosecond)); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
}

func TestBoundToDomain(t *testing.T) {
	s := New(time.Minute, 10)
	a := Domain{ID: 3, Name: "shell"}
	tk, _, _ := s.Issue(a, t0)
	d, err := s.Redeem(tk, t0)
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]bool{"shell": true, "3": true, "4": false, "shell2": false, "": false, "03": false} {
		if d.Matches(ref) != want {
			t.Errorf("Matches(%q) = %v, want %v", ref, !want, want)
		}
	}
}

func TestUnknownAndDistinct(t *testing.T) {
	s := New(time.Minute, 100)
	seen := map[string]bool{}
	for range 50 {
		tk, _, err := s.Issue(Domain{ID: 1}, t0)
		if err != nil {
			t.Fatal(err)
		}
		if seen[tk] || len(tk) < 32 {
			t.Fatalf("ticket %q repeated or short", tk)
		}
		seen[tk] = true
	}
	for _, bad := range []string{"", "x", "../../etc", string(make([]byte, 4096))} {
		if _, err := s.Redeem(bad, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("Redeem(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestBounded(t *testing.T) {
	s := New(time.Minute, 3)
	for range 3 {
		if _, _, err := s.Issue(Domain{ID: 1}, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Issue(Domain{ID: 1}, t0.Add(time.Second)); !errors.Is(err, ErrFull) {
		t.Fatalf("fourth ticket: %v, want ErrFull", err)
	}
	// Once the first three expire, room is made for new ones.
	if _, _, err := s.Issue(Domain{ID: 1}, t0.Add(time.Minute)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if s.Len() != 1 {
		t.Errorf("%d tickets kept, want 1", s.Len())
	}
}
