package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
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
	c.Token = h.c.Token
	c.HTTP = &http.Client{Timeout: time.Minute, Transport: h.Transport()}
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

// TestRestartAllAgents: every agent of the cluster is SIGKILLed, and
// restarted on its data dir; the domains of h2 died with its agent. Once
// h2's agent is back it reconciles: each of its domains crashed,
// @releaseDomain fires on every host and their XenStore homes go; the one
// with on_crash = "destroy" is removed (its name can be used again), the
// one with on_crash = "restart" runs again on h2 under a new domid.
func TestRestartAllAgents(t *testing.T) {
	c := Start(t, Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.Leader(ctx)
	h0, h2 := c.Host(0), c.Host(2)
	cl := patientAPI(h0)
	crashy, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig("crashy", 4), h2.Name))
	if err != nil {
		t.Fatal(err)
	}
	phoenix, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig("phoenix", 4, `on_crash = "restart"`), h2.Name))
	if err != nil {
		t.Fatal(err)
	}
	// Until every host has applied both, a restart might not know them.
	for _, h := range c.Hosts() {
		eventually(t, 10*time.Second, h.Name+" listing both", func() error {
			ds, err := h.API.ListDomains(ctx)
			if err == nil && len(ds) != 2 {
				err = fmt.Errorf("%d domains", len(ds))
			}
			return err
		})
	}
	for _, h := range c.Hosts() {
		h.Kill()
	}
	c.Host(0).Start()
	c.Host(1).Start()
	if _, err := c.WaitConverged(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	x := h0.XS()
	w, err := x.Watch("@releaseDomain", "rel")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events() // fires once when set
	h2.Start()
	c.Leader(ctx)
	start := time.Now()

	var again api.Domain
	eventually(t, 30*time.Second, "crashy gone and phoenix running again on "+h2.Name, func() error {
		ds, err := h0.API.ListDomains(ctx)
		if err != nil {
			return err
		}
		var state []string
		ok := 0
		for _, d := range ds {
			state = append(state, fmt.Sprintf("%s/%d on %s: %s", d.Name, d.ID, d.Host, d.State))
			if d.Name == "phoenix" && d.ID != phoenix.ID && d.Host == h2.Name && d.State == "running" {
				again = d
				ok++
			}
		}
		if ok != 1 || len(ds) != 1 {
			return fmt.Errorf("domains: %v", state)
		}
		return nil
	})
	t.Logf("%s reconciled %v after its restart: phoenix is dom%d, was dom%d", h2.Name, time.Since(start).Round(time.Millisecond), again.ID, phoenix.ID)
	select {
	case <-w.Events():
	case <-time.After(10 * time.Second):
		t.Fatal("no @releaseDomain on h0")
	}
	for _, id := range []uint32{crashy.ID, phoenix.ID} {
		if _, err := x.Read(fmt.Sprintf("/local/domain/%d", id)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("home of dom%d after the restart: %v", id, err)
		}
	}
	if again.UUID != phoenix.UUID {
		t.Errorf("phoenix restarted with uuid %s, was %s", again.UUID, phoenix.UUID)
	}
	if _, err := cl.CreateDomain(ctx, apiSpec(sleeperConfig("crashy", 4), "")); err != nil {
		t.Errorf("crashy's name after it crashed: %v", err)
	}
}
