package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type ca struct{ cert, key []byte }

func newCA(t *testing.T) ca {
	t.Helper()
	c, k, err := CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca{c, k}
}

// host writes a certificate for node/ips to a temp dir and loads it.
func (c ca) host(t *testing.T, node string, ips ...string) *Config {
	t.Helper()
	var nips []net.IP
	for _, s := range ips {
		nips = append(nips, net.ParseIP(s))
	}
	cp, kp, err := CreateCert(c.cert, c.key, node, nips, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{CAFile: c.cert, CertFile(node): cp, KeyFile(node): kp} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Load(filepath.Join(dir, CAFile), filepath.Join(dir, CertFile(node)), filepath.Join(dir, KeyFile(node)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Wait = 10 * time.Millisecond
	return cfg
}

func leaf(t *testing.T, certPEM []byte) *x509.Certificate {
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var members = []Member{{"a", net.ParseIP("10.0.0.1")}, {"b", net.ParseIP("10.0.0.2")}}

func TestCheck(t *testing.T) {
	c := newCA(t)
	cert := func(node string, ips ...string) *x509.Certificate {
		var nips []net.IP
		for _, s := range ips {
			nips = append(nips, net.ParseIP(s))
		}
		p, _, err := CreateCert(c.cert, c.key, node, nips, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return leaf(t, p)
	}
	for _, tc := range []struct {
		what string
		cert *x509.Certificate
		ip   string
		want string
		err  string // "" accepted
	}{
		{"the member at its address", cert("a", "10.0.0.1"), "10.0.0.1", "", ""},
		{"the member it was dialed as", cert("b", "10.0.0.2"), "10.0.0.2", "b", ""},
		{"another address than the certificate's", cert("a", "10.0.0.1"), "10.0.0.9", "", "not for its address"},
		{"a name that is not a member", cert("z", "10.0.0.1"), "10.0.0.1", "", "not a member"},
		{"the name of another member, at this address", cert("b", "10.0.0.1"), "10.0.0.1", "", "another member (b is at 10.0.0.2)"},
		{"dialed as b, answered by a", cert("a", "10.0.0.1", "10.0.0.2"), "10.0.0.2", "b", "is not b"},
		{"no IP at all", cert("a"), "10.0.0.1", "", "not for its address"},
	} {
		name, err := Check(tc.cert, net.ParseIP(tc.ip), tc.want, members)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.what, err)
		case tc.err == "" && name != tc.cert.Subject.CommonName:
			t.Errorf("%s: accepted as %q", tc.what, name)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error containing %q", tc.what, err, tc.err)
		}
	}
}

func TestCreateCertRefusesAForeignKey(t *testing.T) {
	c1, c2 := newCA(t), newCA(t)
	if _, _, err := CreateCert(c1.cert, c2.key, "a", nil, time.Hour); err == nil {
		t.Fatal("a certificate was signed with another CA's key")
	}
	if _, _, err := CreateCert([]byte("junk"), c1.key, "a", nil, time.Hour); err == nil {
		t.Fatal("junk accepted as a CA")
	}
}

// serve accepts one connection on ln with cfg and answers "ok" over it
// once the handshake passes; the error of the handshake goes to errc.
func serve(ln net.Listener, cfg *tls.Config, errc chan<- error) {
	c, err := ln.Accept()
	if err != nil {
		errc <- err
		return
	}
	defer c.Close()
	tc := tls.Server(c, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	err = tc.Handshake()
	if err == nil {
		_, err = tc.Write([]byte("ok"))
	}
	errc <- err
}

// dial connects from local (an IP of the loopback net) to addr with cfg.
func dial(local, addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	tc := tls.Client(raw, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	b, err := io.ReadAll(tc)
	if err == nil && string(b) != "ok" {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// TestMutual runs real handshakes over loopback addresses: the server is
// member a at 127.0.0.1; clients speak from 127.0.0.2, where member b is.
func TestMutual(t *testing.T) {
	c := newCA(t)
	view := func() []Member {
		return []Member{{"a", net.ParseIP("127.0.0.1")}, {"b", net.ParseIP("127.0.0.2")}}
	}
	srv := c.host(t, "a", "127.0.0.1")
	srv.Members = view
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	other := newCA(t)
	for _, tc := range []struct {
		what     string
		client   *Config // nil: no certificate
		want     string
		accepted bool
	}{
		{"member b", c.host(t, "b", "127.0.0.2"), "a", true},
		{"a certificate of another CA", other.host(t, "b", "127.0.0.2"), "a", false},
		{"a name that is not a member", c.host(t, "z", "127.0.0.2"), "a", false},
		{"member a's name from b's address", c.host(t, "a", "127.0.0.2"), "a", false},
		{"no certificate", nil, "a", false},
		{"dialing a as if it were b", c.host(t, "b", "127.0.0.2"), "b", false},
	} {
		errc := make(chan error, 1)
		go serve(ln, srv.Server(), errc)
		var cfg *tls.Config
		if tc.client != nil {
			tc.client.Members = view
			cfg = tc.client.Client(addr, tc.want)
		} else {
			cfg = c.host(t, "b", "127.0.0.2").Client(addr, tc.want)
			cfg.Certificates = nil
		}
		derr := dial("127.0.0.2", addr, cfg)
		serr := <-errc
		if tc.accepted && (derr != nil || serr != nil) {
			t.Errorf("%s: refused: dialer %v, acceptor %v", tc.what, derr, serr)
		}
		if !tc.accepted && derr == nil && serr == nil {
			t.Errorf("%s: accepted", tc.what)
		}
	}

	// The server's own identity is checked too: a client dialing a finds
	// a server whose certificate is another CA's.
	errc := make(chan error, 1)
	go serve(ln, other.host(t, "a", "127.0.0.1").Server(), errc)
	cl := c.host(t, "b", "127.0.0.2")
	cl.Members = view
	if err := dial("127.0.0.2", addr, cl.Client(addr, "a")); err == nil {
		t.Error("a server with another CA's certificate was accepted")
	}
	<-errc

	// Plaintext is refused.
	go serve(ln, srv.Server(), errc)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("SHI1 plaintext, please\r\n\r\n"))
	if err := <-errc; err == nil {
		t.Error("a plaintext client passed the handshake")
	}
	raw.Close()
}

// TestDialContext uses the helper the agents dial with.
func TestDialContext(t *testing.T) {
	c := newCA(t)
	view := func() []Member { return []Member{{"a", net.ParseIP("127.0.0.1")}} }
	srv := c.host(t, "a", "127.0.0.1")
	srv.Members = view
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go serve(ln, srv.Server(), errc)
	tc, err := srv.DialContext(context.Background(), &net.Dialer{}, ln.Addr().String(), "a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(tc)
	tc.Close()
	if err := <-errc; err != nil || string(b) != "ok" {
		t.Fatalf("got %q, acceptor %v", b, err)
	}
}
