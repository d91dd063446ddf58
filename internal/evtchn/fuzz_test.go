package evtchn

import (
	"testing"

	"shi/internal/abi"
)

// checkInvariants verifies the table's links: every local interdomain port
// points at a port that points back, and the virq index matches the ports.
func checkInvariants(t *testing.T, tab *Table) {
	t.Helper()
	for id, d := range tab.doms {
		if len(d.ports) == 0 || d.ports[0].state != Closed || len(d.ports) > d.max {
			t.Fatalf("dom%d: bad port array (len %d, max %d)", id, len(d.ports), d.max)
		}
		virqs := 0
		for p, pi := range d.ports {
			me := Endpoint{Dom: id, Port: Port(p)}
			switch pi.state {
			case Interdomain:
				if pi.remote.Host != Local {
					continue
				}
				r := tab.doms[pi.remote.Dom]
				if r == nil {
					t.Fatalf("%v bound to missing dom%d", me, pi.remote.Dom)
				}
				rp := r.port(pi.remote.Port)
				if rp == nil || rp.state != Interdomain || rp.remote != me {
					t.Fatalf("%v -> %v is not mutual", me, pi.remote)
				}
			case VIRQ:
				virqs++
				if d.virqs[pi.virq] != Port(p) {
					t.Fatalf("%v virq %d not indexed", me, pi.virq)
				}
			}
		}
		if virqs != len(d.virqs) {
			t.Fatalf("dom%d: %d virq ports, %d indexed", id, virqs, len(d.virqs))
		}
	}
}

// FuzzTable runs arbitrary operation sequences, as hostile domains could
// issue them, and checks the table's invariants after each.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1, 1, 2, 1, 1, 3, 2, 1, 0, 4, 1, 1})
	f.Add([]byte{8, 1, 0, 0, 9, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, script []byte) {
		tab := New(locator{9: "far"})
		for dom := DomID(0); dom < 4; dom++ {
			if err := tab.AddDomain(dom, DomainConfig{MaxPorts: 6, Privileged: dom == 0}); err != nil {
				t.Fatal(err)
			}
		}
		arg := func(i int) byte {
			if i < len(script) {
				return script[i]
			}
			return 0
		}
		dom := func(b byte) DomID {
			if b%8 == 7 {
				return abi.DOMID_SELF
			}
			return DomID(b % 8) // 4..6 do not exist
		}
		for i := 0; i < len(script); i += 4 {
			caller, a, b := dom(arg(i+1)), arg(i+2), arg(i+3)
			var acts []Action
			switch script[i] % 11 {
			case 0:
				_, acts, _ = tab.AllocUnbound(caller, dom(a), dom(b))
			case 1:
				_, acts, _ = tab.BindInterdomain(caller, dom(a), Port(b%8))
			case 2:
				acts, _ = tab.Close(caller, Port(a%8))
			case 3:
				acts, _ = tab.Send(caller, Port(a%8))
			case 4:
				_, _ = tab.Status(caller, dom(a), Port(b))
			case 5:
				acts, _ = tab.Reset(caller, dom(a))
			case 6:
				_, acts, _ = tab.BindVIRQ(caller, uint32(a%30), uint32(b%2))
			case 7:
				_, acts, _ = tab.BindIPI(caller, uint32(a%2))
			case 8:
				acts = tab.RemoveDomain(dom(a))
				_ = tab.AddDomain(dom(a), DomainConfig{MaxPorts: 6})
			case 9:
				if p, err := tab.ReserveRemote(caller, 9); err == nil {
					if b%3 == 0 {
						tab.AbortRemote(caller, p)
					} else {
						acts, _ = tab.CompleteRemote(caller, p, Endpoint{Host: "far", Dom: 9, Port: Port(a)})
					}
				}
				if b%5 == 4 {
					acts = tab.DropHost("far")
				}
			case 10:
				acts = tab.Deliver("far", Message{Op: Op(a%3 + 1), To: Endpoint{Dom: caller, Port: Port(b % 8)}, From: Endpoint{Dom: 9, Port: Port(a)}})
			}
			for _, act := range acts {
				if act.String() == "" {
					t.Fatal("empty action")
				}
			}
			checkInvariants(t, tab)
		}
	})
}
