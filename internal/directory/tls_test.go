package directory

import (
	"context"
	"net"
	"testing"
	"time"

	"shi/internal/tlsconf"
	"shi/internal/xenstore"
)

// tlsFor returns a TLS configuration of ca for node at 127.0.0.1, in a
// cluster whose members are names (all at 127.0.0.1).
func tlsFor(t *testing.T, caCert, caKey []byte, node string, names ...string) *tlsconf.Config {
	t.Helper()
	cp, kp, err := tlsconf.CreateCert(caCert, caKey, node, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlsconf.FromPEM(caCert, cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	var ms []tlsconf.Member
	for _, n := range names {
		ms = append(ms, tlsconf.Member{Name: n, IP: net.ParseIP("127.0.0.1")})
	}
	c.Members = func() []tlsconf.Member { return ms }
	c.Wait = 10 * time.Millisecond
	return c
}

// TestRaftOverTLS: two voters replicate over the TLS stream layer; a
// server whose certificate is another CA's, added as a non-voter, never
// receives an entry, and neither does a plaintext one.
func TestRaftOverTLS(t *testing.T) {
	caCert, caKey, err := tlsconf.CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := tlsconf.CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	members := []string{"a", "b", "c", "d"}
	start := func(id string, tc *tlsconf.Config) (*Node, *Replica) {
		r := NewReplica(xenstore.DefaultQuota())
		n, err := NewNode(NodeConfig{
			ID: id, BindAddr: "127.0.0.1:0", TLS: tc,
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		}, r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Shutdown() })
		return n, r
	}
	a, _ := start("a", tlsFor(t, caCert, caKey, "a", members...))
	b, rb := start("b", tlsFor(t, caCert, caKey, "b", members...))
	c, rc := start("c", tlsFor(t, otherCert, otherKey, "c", members...))
	d, rd := start("d", nil)
	if err := a.Bootstrap([]Server{{ID: "a", Address: a.Addr(), Voter: true}, {ID: "b", Address: b.Addr(), Voter: true}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var leader *Node
	for leader == nil {
		if time.Now().After(deadline) {
			t.Fatal("no leader over TLS after 10 s")
		}
		for _, n := range []*Node{a, b} {
			if n.Ready() {
				leader = n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := leader.AddNonvoter("c", c.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := leader.AddNonvoter("d", d.Addr()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	idx, _, err := leader.Apply(ctx, write("/tls", "yes"))
	if err != nil {
		t.Fatal(err)
	}
	for rb.Applied() < idx {
		if time.Now().After(deadline) {
			t.Fatalf("b applied %d of %d over TLS", rb.Applied(), idx)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // many heartbeats' worth
	if rc.Applied() != 0 || rd.Applied() != 0 {
		t.Fatalf("refused servers applied entries: another CA's %d, plaintext %d", rc.Applied(), rd.Applied())
	}
}
