package hypervisor

import (
	"testing"
	"time"

	"shi/guest/evtchn"
)

// A domain binds a port to another port of its own (loopback, as Xen
// allows): both ends get their peer's doorbell, and events go both ways.
func TestLoopbackBind(t *testing.T) {
	c := newCluster(t, "a")
	e, err := evtchn.Open(c.dom(t, "a", 1))
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.AllocUnbound(1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.BindInterdomain(1, a)
	if err != nil {
		t.Fatalf("loopback bind: %v", err)
	}
	if p, err := e.Wait(5 * time.Second); err != nil || p != b {
		t.Fatalf("the bind's event: %v %v", p, err)
	}
	e.Unmask(b)
	for _, x := range [][2]evtchn.Port{{a, b}, {b, a}} {
		if err := e.Notify(x[0]); err != nil {
			t.Fatal(err)
		}
		if p, err := e.Wait(5 * time.Second); err != nil || p != x[1] {
			t.Fatalf("send on %d: got %v %v, want %d", x[0], p, err, x[1])
		}
		e.Unmask(x[1])
	}
}
