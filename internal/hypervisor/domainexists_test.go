package hypervisor

import (
	"testing"

	"shi/guest/evtchn"
)

// evtchn.DomainExists, which libxenctrl's xc_domain_getinfo replacement
// (cmd/libxen) relies on, as an unprivileged domain asks: itself, a
// domain of its host, one of another host, one that never was, and one
// that was removed.
func TestDomainExists(t *testing.T) {
	c := newCluster(t, "a", "b")
	g := c.dom(t, "a", 1)
	c.dom(t, "b", 2)
	c.dom(t, "a", 3)
	check := func(dom DomID, want bool) {
		t.Helper()
		if got, err := evtchn.DomainExists(g, dom); err != nil || got != want {
			t.Errorf("DomainExists(%d) = %v, %v; want %v", dom, got, err, want)
		}
	}
	check(1, true)
	check(3, true)
	check(2, true)
	check(9, false)
	c.hvs["a"].RemoveDomain(3)
	c.n.mu.Lock()
	delete(c.n.where, 3)
	c.n.mu.Unlock()
	check(3, false)
}
