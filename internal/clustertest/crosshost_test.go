package clustertest

import (
	"context"
	"fmt"
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
}
