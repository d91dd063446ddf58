package clustertest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestRestartServesWhatItHad: an agent SIGKILLed and restarted on its
// data dir answers, from its first request, with at least everything it
// had applied before: a read of a node it acknowledged never says ENOENT
// and its domain list is not empty, also when it comes back cut off from
// the majority (it applies its own log again; no quorum needed) and
// before it ever took a snapshot.
func TestRestartServesWhatItHad(t *testing.T) {
	c := Start(t, Options{Hosts: 3, CommitTimeout: commitTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := c.Leader(ctx)
	f := (l + 1) % 3
	fh := c.Host(f)
	lh := c.Host(l)
	if _, err := patientAPI(lh).CreateDomain(ctx, apiSpec(sleeperConfig("elsewhere", 4), lh.Name)); err != nil {
		t.Fatal(err)
	}
	x := fh.XS()
	want := map[string]string{}
	for i := range 20 {
		p, v := fmt.Sprintf("/test/had/%d", i), fmt.Sprint(i)
		if err := x.Write(p, []byte(v)); err != nil {
			t.Fatalf("write %s on %s: %v", p, fh.Name, err)
		}
		want[p] = v
	}
	// What fh acknowledged, it has applied (its reads wait for that).
	if err := readIs(x, "/test/had/19", "19"); err != nil {
		t.Fatal(err)
	}

	check := func(how string) {
		t.Helper()
		fx := fh.XS()
		start := time.Now()
		for p, v := range want {
			if err := Within(fx, opTimeout, func() error { return readIs(fx, p, v) }); err != nil {
				t.Fatalf("%s restarted %s: %v", fh.Name, how, err)
			}
		}
		ds, err := fh.API.ListDomains(ctx)
		if err != nil || len(ds) == 0 {
			t.Fatalf("%s restarted %s lists domains %v, %v", fh.Name, how, ds, err)
		}
		t.Logf("%s restarted %s: %d acknowledged nodes and %d domain(s) read at once (%v)", fh.Name, how, len(want), len(ds), time.Since(start).Round(time.Millisecond))
	}

	fh.Kill()
	c.Cut(f)
	fh.Start()
	check("cut off")
	c.Heal(f)
	c.Leader(ctx)

	fh.Restart()
	check("connected")
	c.Leader(ctx)
	checkAcked(t, c, others(3), want)
}
