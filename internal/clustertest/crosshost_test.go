package clustertest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/domain/domaintest"
)

// TestMain lets the test binary be the programs of the domains the
// cross-host tests start (domaintest's roles).
func TestMain(m *testing.M) { domaintest.Main(m) }

// crossPair starts domain first (role firstRole) on host a and second
// (role secondRole, PEER=first's id) on host b, and tells first its peer
// in ~/data/peer, as the single-host tests of internal/domain do.
func crossPair(t *testing.T, c *Cluster, a, b int, first, firstRole, second, secondRole string, env ...string) (api.Domain, api.Domain) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env = append(env, "SHI_LINK_DEBUG=1")
	if os.Getenv("SHI_LONG") == "" {
		env = append(env, domaintest.EnvWatchdog+"=90s")
	}
	da := createOn(t, ctx, c.Host(a), domaintest.Config(first, firstRole, env))
	db := createOn(t, ctx, c.Host(b), domaintest.Config(second, secondRole, append([]string{"PEER=" + strconv.Itoa(int(da.ID))}, env...)))
	if err := c.Host(a).XS().Write(fmt.Sprintf("/local/domain/%d/data/peer", da.ID), []byte(strconv.Itoa(int(db.ID)))); err != nil {
		t.Fatal(err)
	}
	return da, db
}

// createOn starts a domain on h.
func createOn(t *testing.T, ctx context.Context, h *Host, config string) api.Domain {
	t.Helper()
	d, err := patientAPI(h).CreateDomain(ctx, api.DomainSpec{Config: config, Node: h.Name})
	if err != nil {
		t.Fatalf("create on %s: %v", h.Name, err)
	}
	return d
}

// waitEnd waits until domain d (of host h) has ended and returns how,
// with its last output.
func waitEnd(t *testing.T, h *Host, d api.Domain, timeout time.Duration) api.DomainOutput {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := patientAPI(h)
	for {
		o, err := cl.DomainOutput(ctx, strconv.Itoa(int(d.ID)), h.Name)
		if err == nil && !o.Running && o.Exit != "" {
			return o
		}
		select {
		case <-ctx.Done():
			t.Fatalf("domain %s (id %d on %s) did not end within %v (last: %+v %v)", d.Name, d.ID, h.Name, timeout, o, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// expectExit0 checks that every domain ended with exit code 0.
func expectExit0(t *testing.T, hosts []*Host, doms ...api.Domain) {
	t.Helper()
	for i, d := range doms {
		o := waitEnd(t, hosts[i], d, 2*time.Minute)
		if o.Exit != "exit code 0" {
			t.Errorf("domain %s on %s: %s\n%s", d.Name, hosts[i].Name, o.Exit, strings.Join(o.Lines, "\n"))
		}
	}
}

// TestCrossHost runs the single-host tests of the domains issue with the
// two domains on different test hosts, on one cluster.
func TestCrossHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 3})
	h0, h1 := c.Host(0), c.Host(1)
	both := []*Host{h0, h1}
	t.Run("ping-pong", func(t *testing.T) {
		a, b := crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=2000")
		expectExit0(t, both, a, b)
	})
	t.Run("coalesce and mask", func(t *testing.T) {
		a, b := crossPair(t, c, 0, 1, "recv", "evt-recv", "send", "evt-send")
		expectExit0(t, both, a, b)
	})
	t.Run("granted ring", func(t *testing.T) {
		a, b := crossPair(t, c, 0, 1, "back", "ring-back", "front", "ring-front")
		expectExit0(t, both, a, b)
	})
	t.Run("end access while mapped", func(t *testing.T) {
		a, b := crossPair(t, c, 0, 1, "mapper", "mapper", "granter", "granter")
		expectExit0(t, both, a, b)
	})
	t.Run("peer death", func(t *testing.T) {
		s, b := crossPair(t, c, 0, 1, "survivor", "survivor", "binder", "binder")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := domaintest.WaitRead(h0.XS(), fmt.Sprintf("/local/domain/%d/data/waiting", s.ID), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := patientAPI(h1).DestroyDomain(ctx, b.Name); err != nil {
			t.Fatal(err)
		}
		expectExit0(t, both[:1], s)
	})
	t.Run("hostile domain", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v := createOn(t, ctx, h0, domaintest.Config("victim", "victim", nil))
		hd := createOn(t, ctx, h1, domaintest.Config("hostile", "hostile", []string{"VICTIM=" + strconv.Itoa(int(v.ID))}))
		expectExit0(t, both[1:], hd)
		// The victim still runs: nothing forged changed its page.
		time.Sleep(200 * time.Millisecond)
		o, err := patientAPI(h0).DomainOutput(ctx, "victim", h0.Name)
		if err != nil || !o.Running {
			t.Fatalf("victim: %+v %v", o, err)
		}
		if err := patientAPI(h0).DestroyDomain(ctx, "victim"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("lazy ring", func(t *testing.T) {
		n := "20000"
		if os.Getenv("SHI_LONG") != "" {
			n = "1000000"
		}
		a, b := crossPair(t, c, 0, 1, "back", "ring-back", "front", "ring-front", "REQUESTS="+n)
		expectExit0(t, both, a, b)
	})
	t.Run("duplex pipes", func(t *testing.T) {
		total := "16777216" // each way; the suite shares 2 cores with the rest
		if os.Getenv("SHI_LONG") != "" {
			total = "1073741824"
		}
		a, b := crossPair(t, c, 0, 1, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL="+total)
		expectExit0(t, both, a, b)
	})
	t.Run("three hosts copy", func(t *testing.T) {
		// One GNTTABOP_copy on h0 between grants of domains on h1 and h2.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		src := createOn(t, ctx, h1, domaintest.Config("src", "copy-src", nil))
		dst := createOn(t, ctx, c.Host(2), domaintest.Config("dst", "copy-dst", nil))
		cp := createOn(t, ctx, h0, domaintest.Config("copier", "copier",
			[]string{"SRC=" + strconv.Itoa(int(src.ID)), "DST=" + strconv.Itoa(int(dst.ID))}))
		for _, d := range []api.Domain{src, dst} {
			if err := h0.XS().Write(fmt.Sprintf("/local/domain/%d/data/peer", d.ID), []byte(strconv.Itoa(int(cp.ID)))); err != nil {
				t.Fatal(err)
			}
		}
		expectExit0(t, []*Host{h0, h1, c.Host(2)}, cp, src, dst)
	})
	t.Run("1 ms delay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.SetFaultsAll(ctx, Faults{DelayMs: 1})
		defer c.SetFaultsAll(ctx, Faults{Reset: true})
		a, b := crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=200")
		expectExit0(t, both, a, b)
		a, b = crossPair(t, c, 0, 1, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL=8388608")
		expectExit0(t, both, a, b)
	})
	t.Run("1% loss", func(t *testing.T) {
		// nftables drops 1% of what host 1 sends (numgen random); TCP
		// recovers, the streams must not notice.
		rule := []string{"nft", "add rule inet shiloss out numgen random mod 100 0 counter drop"}
		for _, cmd := range [][]string{
			{"nft", "add table inet shiloss"},
			{"nft", "add chain inet shiloss out { type filter hook output priority 0 ; }"},
			rule,
		} {
			if out, err := c.NS.Host(1).Command(context.Background(), cmd...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", cmd, err, out)
			}
		}
		defer c.NS.Host(1).Command(context.Background(), "nft", "delete table inet shiloss").Run()
		a, b := crossPair(t, c, 0, 1, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL=16777216")
		expectExit0(t, both, a, b)
		a, b = crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=500")
		expectExit0(t, both, a, b)
		out, _ := c.NS.Host(1).Command(context.Background(), "nft", "list table inet shiloss").CombinedOutput()
		t.Logf("drops on host 1: %s", strings.TrimSpace(string(out)))
		if !strings.Contains(string(out), "packets") || strings.Contains(string(out), "packets 0 ") {
			t.Errorf("the loss rule dropped nothing: %s", out)
		}
	})
	t.Run("partition heals", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c.Cut(1)
		if err := Poll(ctx, 100*time.Millisecond, func() bool { st, _ := h0.StateOf(ctx, h1); return st == "failed" || st == "dead" }); err != nil {
			t.Fatalf("h0 never saw h1 fail: %v", err)
		}
		c.Heal(1)
		if _, err := c.WaitConverged(ctx, []int{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		a, b := crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=200")
		expectExit0(t, both, a, b)
	})
}

// metric reads one gauge from an agent's /metrics.
func metric(t *testing.T, h *Host, name string) float64 {
	t.Helper()
	resp, err := h.API.HTTP.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s: no metric %s", h.Name, name)
	return 0
}

// TestCrossHostHostDeath: the host of one end of two streams is
// SIGKILLed mid-stream. The survivor sees its peer gone (its reads fail
// cleanly, no hang) within membership's detection time, and its agent is
// left with nothing of it: no links, ports, maps or pins, no waiting
// requests, and as many descriptors and goroutines as before (give or
// take the agent's own churn).
func TestCrossHostHostDeath(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 3})
	h0, h2 := c.Host(0), c.Host(2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gauges := []string{"shi_hypervisor_links", "shi_hypervisor_ports", "shi_hypervisor_maps",
		"shi_hypervisor_remote_pins", "shi_hypervisor_pending", "shi_hypervisor_domains", "shi_hypervisor_pages"}
	// The driver domains come up after the cluster (under load, after a
	// first look at the gauges): count h0's before counting.
	waitDrivers(t, ctx, c)
	if err := Poll(ctx, 50*time.Millisecond, func() bool { return metric(t, h0, "shi_hypervisor_domains") >= 1 }); err != nil {
		t.Fatal("h0's hypervisor never served its driver domain")
	}
	before := map[string]float64{}
	for _, g := range append(gauges, "process_open_fds", "go_goroutines") {
		before[g] = metric(t, h0, g)
	}
	// Endless streams both ways (TOTAL far more than a test moves).
	a, _ := crossPair(t, c, 0, 2, "survivor", "pipe-duplex", "doomed", "pipe-duplex", "TOTAL=1099511627776", "EXPECT_GONE=1")
	if err := Poll(ctx, 50*time.Millisecond, func() bool { return metric(t, h0, "shi_hypervisor_links") > before["shi_hypervisor_links"] }); err != nil {
		t.Fatal("the pair never linked")
	}
	time.Sleep(500 * time.Millisecond) // mid-stream
	killed := time.Now()
	h2.Kill()
	// Longer than the domains' watchdog, which prints a stuck survivor's
	// state and stacks.
	o := waitEnd(t, h0, a, 100*time.Second)
	took := time.Since(killed)
	if o.Exit != "exit code 0" {
		t.Fatalf("survivor: %s\n%s", o.Exit, strings.Join(o.Lines, "\n"))
	}
	t.Logf("the survivor saw its peer's host die %v after the kill", took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("took %v, far past failure detection", took)
	}
	// Nothing of the dead host's domain is left on h0.
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		for _, g := range gauges {
			if metric(t, h0, g) != before[g] {
				return false
			}
		}
		return true
	}); err != nil {
		for _, g := range gauges {
			t.Errorf("%s: %v before, %v after", g, before[g], metric(t, h0, g))
		}
	}
	for _, g := range []string{"process_open_fds", "go_goroutines"} {
		if after := metric(t, h0, g); after > before[g]+10 {
			t.Errorf("%s: %v before, %v after", g, before[g], after)
		}
	}
}

// TestCrossHostEncrypted: with a cluster key every data-plane connection
// is authenticated (the hypervisors' messages and the links), and
// domains on different hosts talk as without one.
func TestCrossHostEncrypted(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 3, Args: []string{"-encrypt", "c2hpLWNsdXN0ZXIta2V5IQ=="}})
	both := []*Host{c.Host(0), c.Host(1)}
	a, b := crossPair(t, c, 0, 1, "pong", "pong", "ping", "ping", "ROUNDS=500")
	expectExit0(t, both, a, b)
	a, b = crossPair(t, c, 0, 1, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL=4194304")
	expectExit0(t, both, a, b)
}
