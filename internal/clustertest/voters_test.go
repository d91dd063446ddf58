package clustertest

import (
	"context"
	"testing"
	"time"

	"shi/api"
)

// TestVoterReplacement: on 4 hosts with 3 voters, a voter killed and dead
// longer than -voter-grace is removed and the live non-voter promoted, so
// the cluster has 3 voters again and keeps committing; the domains of the
// dead host crash (and go, on_crash being "destroy") on every host.
func TestVoterReplacement(t *testing.T) {
	const grace = 3 * time.Second
	c := Start(t, Options{Hosts: 4, BootstrapExpect: 3, Args: []string{"-voter-grace", grace.String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	roles := func(h *Host) map[string]string {
		ns, err := h.Nodes(ctx)
		if err != nil {
			return nil
		}
		out := map[string]string{}
		for _, n := range ns {
			out[n.Name] = n.Role + "/" + n.State
		}
		return out
	}
	count := func(r map[string]string, role string) (n int, who []string) {
		for name, v := range r {
			if v == role+"/alive" || (role == "voter" && v == "leader/alive") {
				n++
				who = append(who, name)
			}
		}
		return n, who
	}
	l := c.Leader(ctx)
	var nonvoter string
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		r := roles(c.Host(l))
		v, _ := count(r, "voter")
		n, who := count(r, "nonvoter")
		if v == 3 && n == 1 {
			nonvoter = who[0]
			return true
		}
		return false
	}); err != nil {
		t.Fatalf("never 3 voters and 1 non-voter: %v", roles(c.Host(l)))
	}

	// A domain on the victim, a voter other than the leader.
	victim := -1
	for i := range 4 {
		if i != l && c.Host(i).Name != nonvoter {
			victim = i
			break
		}
	}
	v := c.Host(victim)
	d, err := v.API.CreateDomain(ctx, api.DomainSpec{Node: v.Name, Config: "name = \"victim-dom\"\nmemory = 4\ncmd = \"/bin/sleep\"\nargs = [\"600\"]\n"})
	if err != nil || d.Host != v.Name {
		t.Fatalf("domain on %s: %+v %v", v.Name, d, err)
	}
	killed := time.Now()
	v.Kill()

	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		r := roles(c.Host(l))
		n, _ := count(r, "voter")
		_, still := r[v.Name]
		return n == 3 && (!still || r[v.Name] == "none/failed") && r[nonvoter] != "nonvoter/alive"
	}); err != nil {
		t.Fatalf("the dead voter was not replaced: %v", roles(c.Host(l)))
	}
	took := time.Since(killed)
	t.Logf("voter %s replaced by %s %v after the kill (grace %v)", v.Name, nonvoter, took.Round(time.Millisecond), grace)
	if took < grace {
		t.Fatalf("replaced after %v, before the %v grace period", took, grace)
	}

	for _, i := range others(4) {
		if i == victim {
			continue
		}
		h := c.Host(i)
		if err := Poll(ctx, 100*time.Millisecond, func() bool {
			ds, err := h.API.ListDomains(ctx)
			if err != nil {
				return false
			}
			for _, x := range ds {
				if x.ID == d.ID {
					return false // crashed, it goes: on_crash = "destroy"
				}
			}
			return true
		}); err != nil {
			t.Fatalf("%s never saw %s's domain crash and go", h.Name, v.Name)
		}
	}
	x := c.Host(l).XS()
	if err := Within(x, 10*time.Second, func() error { return x.Write("/after/replacement", []byte("ok")) }); err != nil {
		t.Fatalf("write after the replacement: %v", err)
	}
}
