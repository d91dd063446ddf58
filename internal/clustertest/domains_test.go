package clustertest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"shi/api"
)

// sleeperConfig is a domain that sleeps, with extra config lines.
func sleeperConfig(name string, memMiB int, extra ...string) string {
	s := fmt.Sprintf("name = %q\nmemory = %d\ncmd = \"/bin/sleep\"\nargs = [\"600\"]\n", name, memMiB)
	for _, l := range extra {
		s += l + "\n"
	}
	return s
}

// patientAPI is a client of h's agent that waits as long as a create may
// take while the directory elects a leader (Host.API gives up after 5 s).
func patientAPI(h *Host) *api.Client {
	c := api.NewClient(h.URL)
	c.HTTP = &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: h.dial}}
	return c
}

// TestCreateWhileLeaderDies: creates sent to a follower while the
// leader's host is SIGKILLed all succeed, with unique ids, on live hosts.
// Placement trusts membership, which takes a moment to give up on the
// dead host; a create placed there finds its agent does not answer and
// is placed again without it. A create that names the dead host with
// -node fails, saying that host is unreachable (not that the caller's own
// agent does not answer).
func TestCreateWhileLeaderDies(t *testing.T) {
	c := Start(t, Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := c.Leader(ctx)
	dead := c.Host(l)
	rest := others(3, l)
	f := c.Host(rest[0])
	cl := patientAPI(f)

	// Reserve 2 GiB on the other hosts, so that placement prefers the
	// leader's host (the hosts share this machine's free memory).
	for _, i := range rest {
		h := c.Host(i)
		if _, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig("ballast-"+h.Name, 2048), h.Name)); err != nil {
			t.Fatalf("ballast on %s: %v", h.Name, err)
		}
	}
	probe, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig("probe", 4), ""))
	if err != nil || probe.Host != dead.Name {
		t.Fatalf("placement chose %q (%v), want the leader %s", probe.Host, err, dead.Name)
	}

	dead.Kill()
	killed := time.Now()
	_, err = cl.CreateDomain(ctx, apiSpec(sleeperConfig("pinned", 4), dead.Name))
	if err == nil {
		t.Fatalf("created a domain on %s, which was killed", dead.Name)
	}
	t.Logf("create -node %s: %v", dead.Name, err)
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("host %q is unreachable", dead.Name)) || strings.Contains(msg, "shi agent -dev") {
		t.Errorf("create -node %s: the error does not say that host is unreachable: %v", dead.Name, err)
	}

	const n, workers = 30, 6
	type result struct {
		d   api.Domain
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				d, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig(fmt.Sprintf("burst-%d", i), 4), ""))
				results[i] = result{d, err}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d creates sent to %s within %v of killing %s", n, f.Name, time.Since(killed).Round(time.Millisecond), dead.Name)
	ids := map[uint32]string{}
	for i, r := range results {
		name := fmt.Sprintf("burst-%d", i)
		switch {
		case r.err != nil:
			t.Errorf("%s: %v", name, r.err)
		case r.d.Host == dead.Name:
			t.Errorf("%s placed on %s, which is dead", name, dead.Name)
		case ids[r.d.ID] != "":
			t.Errorf("%s and %s have the same id %d", ids[r.d.ID], name, r.d.ID)
		default:
			ids[r.d.ID] = name
		}
	}
	ds, err := cl.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for _, d := range ds {
		if strings.HasPrefix(d.Name, "burst-") && d.State == "running" {
			listed++
		}
	}
	if listed != n {
		t.Errorf("%d burst domains running, want %d", listed, n)
	}
}

func apiSpec(config, node string) api.DomainSpec { return api.DomainSpec{Config: config, Node: node} }
