package domain

import (
	"errors"
	"strings"
	"testing"
)

func TestPlace(t *testing.T) {
	const G = 1 << 30
	hosts := []Host{
		{Name: "a", Alive: true, MemFree: 4 * G},
		{Name: "b", Alive: true, MemFree: 8 * G, Reserved: 6 * G},
		{Name: "c", Alive: false, MemFree: 64 * G},
		{Name: "d", Alive: true, MemFree: 3 * G},
		{Name: "e", Alive: true, MemFree: 4 * G},
	}
	for _, tc := range []struct {
		mem       uint64
		node      string
		want, err string
	}{
		{mem: 64, want: "a"},            // a and e tie on 4G left; name breaks it
		{mem: 5 << 10, want: "b"},       // only b has 5 GiB free
		{mem: 64, node: "d", want: "d"}, // asked for
		{mem: 64, node: "c", err: `host "c" is unreachable`},
		{mem: 64, node: "z", err: `no host named "z"`},
		{mem: 4 << 10, node: "d", err: "has 3072 MiB free"},
		{mem: 100 << 10, err: "no live host"},
	} {
		got, err := Place(hosts, tc.mem, tc.node)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Place(%d, %q) = %q, %v; want error %q", tc.mem, tc.node, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Place(%d, %q) = %q, %v; want %q", tc.mem, tc.node, got, err, tc.want)
		}
	}
	if _, err := Place(nil, 1, ""); !errors.Is(err, ErrNoHost) {
		t.Errorf("no hosts: %v", err)
	}
	// A host whose agent did not answer is passed over while membership
	// still sees it alive; with none left, the error says who did not.
	hosts[0].Unreachable, hosts[4].Unreachable = true, true
	if got, err := Place(hosts, 64, ""); err != nil || got != "d" {
		t.Errorf("a and e unreachable: %q, %v; want d", got, err)
	}
	if got, err := Place(hosts[:1], 64, ""); !errors.Is(err, ErrNoHost) || !strings.Contains(err.Error(), "a did not") {
		t.Errorf("only a, unreachable: %q, %v", got, err)
	}
}
