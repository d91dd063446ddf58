package directory

import (
	"testing"
	"time"
)

func TestPlanVoters(t *testing.T) {
	alive := func(n string) Host { return Host{Name: n, RaftAddr: n + ":1", Alive: true} }
	down := func(n string, d time.Duration) Host { return Host{Name: n, RaftAddr: n + ":1", DownFor: d} }
	v := func(n string) Server { return Server{ID: n, Address: n + ":1", Voter: true} }
	nv := func(n string) Server { return Server{ID: n, Address: n + ":1"} }
	grace := 10 * time.Second
	for _, tc := range []struct {
		name    string
		servers []Server
		hosts   []Host
		want    Change
		none    bool
	}{
		{"stable", []Server{v("a"), v("b"), v("c")}, []Host{alive("a"), alive("b"), alive("c")}, Change{}, true},
		{"fourth host is a non-voter", []Server{v("a"), v("b"), v("c")}, []Host{alive("a"), alive("b"), alive("c"), alive("d")},
			Change{Kind: AddNonvoter, ID: "d", Address: "d:1"}, false},
		{"second host votes", []Server{v("a")}, []Host{alive("a"), alive("b")}, Change{Kind: AddVoter, ID: "b", Address: "b:1"}, false},
		{"down within grace keeps its vote", []Server{v("a"), v("b"), v("c"), nv("d")}, []Host{alive("a"), down("b", time.Second), alive("c"), alive("d")},
			Change{}, true},
		{"down past grace is removed", []Server{v("a"), v("b"), v("c"), nv("d")}, []Host{alive("a"), down("b", time.Minute), alive("c"), alive("d")},
			Change{Kind: RemoveServer, ID: "b"}, false},
		{"non-voter promoted", []Server{v("a"), v("c"), nv("d")}, []Host{alive("a"), alive("c"), alive("d")},
			Change{Kind: AddVoter, ID: "d", Address: "d:1"}, false},
		{"self never removed", []Server{v("a"), v("b")}, []Host{down("a", time.Hour), alive("b")}, Change{}, true},
		{"left", []Server{v("a"), v("b")}, []Host{alive("a"), {Name: "b", Left: true}}, Change{Kind: RemoveServer, ID: "b"}, false},
		{"new address", []Server{v("a"), v("b")}, []Host{alive("a"), {Name: "b", RaftAddr: "b:2", Alive: true}},
			Change{Kind: AddVoter, ID: "b", Address: "b:2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PlanVoters(tc.servers, tc.hosts, "a", 3, grace)
			if ok == tc.none || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, ok, tc.want)
			}
		})
	}
}

func TestInitialVoters(t *testing.T) {
	hs := []Host{{Name: "c", RaftAddr: "c:1", Alive: true}, {Name: "a", RaftAddr: "a:1", Alive: true}, {Name: "b", Alive: true}}
	if _, ok := InitialVoters(hs, 3); ok {
		t.Fatal("bootstrapped without three raft addresses")
	}
	hs[2].RaftAddr = "b:1"
	hs = append(hs, Host{Name: "d", RaftAddr: "d:1", Alive: true})
	got, ok := InitialVoters(hs, 3)
	if !ok || len(got) != 3 || got[0].ID != "a" || got[2].ID != "c" {
		t.Fatalf("got %+v", got)
	}
	hs[3].InCluster = true
	if got, ok := InitialVoters(hs, 3); ok {
		t.Fatalf("bootstrapped beside an existing cluster: %+v", got)
	}
}
