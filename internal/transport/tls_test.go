package transport

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/tlsconf"
)

// testCA makes a CA and loads certificates of it for test meshes, all at
// 127.0.0.1; every name it issued is a member there.
type testCA struct {
	t         *testing.T
	cert, key []byte
	members   []tlsconf.Member
}

func newTestCA(t *testing.T, members ...string) *testCA {
	c, k, err := tlsconf.CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, cert: c, key: k}
	for _, m := range members {
		ca.members = append(ca.members, tlsconf.Member{Name: m, IP: net.ParseIP("127.0.0.1")})
	}
	return ca
}

func (ca *testCA) config(node string) *tlsconf.Config {
	t := ca.t
	cp, kp, err := tlsconf.CreateCert(ca.cert, ca.key, node, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for n, b := range map[string][]byte{"ca.pem": ca.cert, "c.pem": cp, "k.pem": kp} {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := tlsconf.Load(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Members = func() []tlsconf.Member { return ca.members }
	cfg.Wait = 10 * time.Millisecond
	return cfg
}

// TestTLSMesh: meshes with certificates of the cluster's CA exchange
// messages and links; a mesh with another CA's certificate, one without
// TLS, and one using a member's certificate under another name are
// refused, and B handles nothing from them.
func TestTLSMesh(t *testing.T) {
	ca := newTestCA(t, "A", "B")
	tn := newTestNet(t)
	got := make(chan string, 16)
	bl := newLinkSide()
	b := tn.start("B", "", func(c *Config, _ *tunables) {
		c.TLS = ca.config("B")
		c.Link = bl.link
		c.Handle = func(from string, m Msg) { got <- from + ":" + string(m.Data) }
	})
	bl.m = b.Mesh
	a := tn.start("A", "", func(c *Config, _ *tunables) { c.TLS = ca.config("A") })

	if err := a.Send("B", &Msg{Kind: 1, Data: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "A:hi" {
			t.Fatalf("B got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("B never got A's message over TLS")
	}

	// A link over TLS is relayed: the domain's descriptor is one end of
	// a socketpair, and its bytes cross encrypted.
	ca2, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("file"))
	if err != nil {
		t.Fatal(err)
	}
	fa, err := a.LinkFile(ca2)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb := <-bl.files
	defer fb.Close()
	if d := fdInt(t, fa, func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN) }); d != unix.AF_UNIX {
		t.Fatalf("a TLS link handed out its TCP socket (domain %d)", d)
	}
	fdWrite(t, fa, "ping")
	if s := fdRead(t, fb, 4); s != "ping" {
		t.Fatalf("B read %q", s)
	}

	other := newTestCA(t, "A", "B", "C", "D", "E")
	for _, tc := range []struct {
		name string
		tls  func() *tlsconf.Config
	}{
		{"C", func() *tlsconf.Config { return other.config("C") }}, // another CA
		{"D", func() *tlsconf.Config { return nil }},               // plaintext
		{"E", func() *tlsconf.Config { return ca.config("A") }},    // A's certificate, claiming to be E
	} {
		x := tn.start(tc.name, "", func(c *Config, tun *tunables) {
			c.TLS = tc.tls()
			tun.handshakeTimeout = time.Second
		})
		if _, err := x.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("conn")); err == nil {
			t.Errorf("%s: link accepted", tc.name)
		}
		x.Send("B", &Msg{Kind: 1, Data: []byte("intruder")})
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case s := <-got:
		t.Fatalf("B handled %q from a refused peer", s)
	default:
	}
	if b.Stats().AuthFailures == 0 {
		t.Error("B counted no failure for E's claim")
	}
	if !b.log.contains("stream setup failed") {
		t.Error("B logged no refused TLS handshake")
	}
}
