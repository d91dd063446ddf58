package clustertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/nstest"
	"shi/internal/tlsconf"
)

// TestTLS runs a cluster with mutual TLS and a gossip key. A stranger on
// the cluster's network is refused by the API, Raft and data-plane ports
// (plaintext, no certificate, another CA's, a name that is not a member,
// a member's name at the stranger's address), so is a member presenting
// another member's name, and nothing changes; then the gossip key is
// rotated with shi keyring while a host writes XenStore (forwarded
// commits) and two domains on different hosts stream through a ring, and
// a host restarted afterwards gets back in with the key it saved.
func TestTLS(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	key1 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	key2 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	c := Start(t, Options{Hosts: 3, Strangers: 1, TLS: true, Args: []string{"-encrypt", key1}})
	for _, h := range c.Hosts() {
		if !strings.HasPrefix(h.URL, "https://") {
			t.Fatalf("%s serves %s", h.Name, h.URL)
		}
	}

	t.Run("stranger", func(t *testing.T) { strangers(t, c) })
	t.Run("gossip with the wrong key", func(t *testing.T) { gossipIntruder(t, c) })

	// Rotation under load.
	w := startWriter(c.Host(1), "/tls-writes")
	a, b := crossPair(t, c, 0, 2, "left", "pipe-duplex", "right", "pipe-duplex", "TOTAL=16777216")
	for _, step := range [][]string{{"install", key2}, {"use", key2}, {"remove", key1}} {
		out := shiOn(t, c.Host(2), append([]string{"keyring"}, step...)...)
		t.Logf("shi keyring %s: %s", step[0], out)
		time.Sleep(500 * time.Millisecond) // some gossip under the new keys
	}
	var nodes []api.KeyringNode
	if err := json.Unmarshal([]byte(shiOn(t, c.Host(0), "keyring", "list", "-json")), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 3 {
		t.Fatalf("keyring list: %+v", nodes)
	}
	for _, n := range nodes {
		if n.Primary != key2 || !slices.Equal(n.Keys, []string{key2}) {
			t.Errorf("%s's keyring after the rotation: %+v", n.Node, n)
		}
	}
	expectExit0(t, []*Host{c.Host(0), c.Host(2)}, a, b)
	log := w.Stop()
	var failed int
	for _, x := range log {
		if x.err != nil {
			failed++
			t.Errorf("write %s during the rotation: %v", x.path, x.err)
		}
	}
	t.Logf("%d writes during the rotation, %d failed", len(log), failed)
	if len(log) < 10 {
		t.Errorf("only %d writes", len(log))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitConverged(ctx, []int{0, 1, 2}); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}

	// A host restarted with its old -encrypt key starts from the keyring
	// it saved, so it gets back in.
	c.Host(2).Kill()
	c.Host(2).Start()
	if _, err := c.WaitConverged(ctx, []int{0, 1, 2}); err != nil {
		t.Fatalf("h2 restarted after the rotation: %v", err)
	}
}

// shiOn runs the shi CLI in h's namespace against its agent (over HTTPS,
// with the CA from SHI_CACERT) and returns its stdout.
func shiOn(t *testing.T, h *Host, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.c.NS.Host(h.Index).Command(ctx, append([]string{h.c.Bin}, args...)...)
	cmd.Env = append(os.Environ(), h.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("shi %v on %s: %v\n%s", args, h.Name, err, stderr.String())
	}
	return string(out)
}

// strangers probes every TCP port of h0 from a stranger's namespace, and
// from h2's (a member's address, where only the certificate can tell),
// and checks that the cluster is as it was.
func strangers(t *testing.T, c *Cluster) {
	h0, member, stranger := c.Host(0), c.Host(2), c.Stranger(0)
	sdial, mdial := nsDial(stranger), nsDial(c.NS.Host(member.Index))
	before := tlsClusterState(t, h0)
	ca := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(c.TLSDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	caCert, caKey := ca(tlsconf.CAFile), ca(tlsconf.CAKeyFile)
	otherCert, otherKey, err := tlsconf.CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(caC, caK []byte, name, ip string) *tls.Certificate {
		cp, kp, err := tlsconf.CreateCert(caC, caK, name, []net.IP{net.ParseIP(ip)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return &tc
	}
	sip := stranger.IP
	refused := []struct {
		what string
		dial dialFunc
		cert *tls.Certificate
	}{
		{"a stranger without a certificate", sdial, nil},
		{"a stranger with another CA's certificate", sdial, cert(otherCert, otherKey, "h2", sip)},
		{"a stranger with a certificate for a name that is not a member", sdial, cert(caCert, caKey, "stranger", sip)},
		{"a stranger with a certificate for member h1 at its own address", sdial, cert(caCert, caKey, "h1", sip)},
		{"member h2 presenting h1's name at h2's address", mdial, cert(caCert, caKey, "h1", member.IP)},
	}
	for _, port := range []string{"7947", "7948"} { // Raft, data plane
		addr := net.JoinHostPort(h0.IP, port)
		if err := plaintext(sdial, addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
		for _, r := range refused {
			if err := probe(r.dial, addr, r.cert); err == nil {
				t.Errorf("%s: accepted %s", addr, r.what)
			}
		}
		// The control: h2's own certificate from h2 is accepted, so the
		// refusals above are the certificates' doing.
		if err := probe(mdial, addr, cert(caCert, caKey, "h2", member.IP)); err != nil {
			t.Errorf("%s: refused a member's certificate: %v", addr, err)
		}
	}

	// The API: plaintext gets no answer from it; with the CA but without
	// a member's certificate, the agents' own endpoints refuse even the
	// management token; another CA's certificate fails the handshake.
	api0 := "https://" + net.JoinHostPort(h0.IP, "7070")
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: sdial}}
	if resp, err := plain.Get("http://" + net.JoinHostPort(h0.IP, "7070") + "/v1/nodes"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plaintext API answered: %s", b)
		}
	}
	for _, r := range refused {
		tcfg := c.clientTLS()
		if r.cert != nil {
			tcfg.Certificates = []tls.Certificate{*r.cert}
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: r.dial, TLSClientConfig: tcfg}}
		req, _ := http.NewRequest(http.MethodPost, api0+"/v1/internal/commit", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := hc.Do(req)
		if err != nil {
			continue // refused in the handshake
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("internal commit with %s: %s %s", r.what, resp.Status, b)
		}
	}
	if after := tlsClusterState(t, h0); after != before {
		t.Errorf("the cluster changed:\nbefore %s\nafter  %s", before, after)
	}
}

// clusterState is what a stranger must not change: members, voters,
// domains.
func tlsClusterState(t *testing.T, h *Host) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := h.API.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, n := range ns {
		s = append(s, n.Name+"/"+n.State+"/"+n.Role)
	}
	ds, err := h.API.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("nodes %v, %d domains", s, len(ds))
}

// probe runs a TLS handshake with cert (nil: none) from inside h's
// namespace. It returns nil if the server kept the connection (a server
// that refuses a client certificate says so after the client's side of a
// TLS 1.3 handshake, so probe reads for a moment).
func probe(dial dialFunc, addr string, cert *tls.Certificate) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	cfg := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(raw, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	tc.SetReadDeadline(time.Now().Add(2500 * time.Millisecond)) // beyond tlsconf.Config.Wait
	_, err = tc.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil // still connected, waiting for us
	}
	if err == nil {
		return nil
	}
	return err
}

// plaintext speaks plain bytes to addr and wants the connection closed on
// it without a plain answer.
func plaintext(dial dialFunc, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	raw.Write([]byte("SHI1\x01\x02h2" + strings.Repeat("\x00", 64)))
	b, err := io.ReadAll(raw)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("plaintext: the connection stayed open (%q so far)", b)
	}
	if len(b) > 0 && b[0] != 0x15 { // a TLS alert is all it may send
		return fmt.Errorf("plaintext: answered %q", b)
	}
	return nil
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// nsDial dials from inside a test host's namespace.
func nsDial(nh *nstest.Host) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := nh.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// gossipIntruder starts an agent in the stranger's namespace with a
// gossip key of its own that tries to join h0: memberlist drops what it
// sends, so no member ever lists it, and the cluster stays as it was.
func gossipIntruder(t *testing.T, c *Cluster) {
	h0, s := c.Host(0), c.Stranger(0)
	before := tlsClusterState(t, h0)
	dir, err := os.MkdirTemp("", "shi-intruder-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wrong := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	var log bytes.Buffer
	cmd := s.Command(ctx, c.Bin, "agent", "-name", "intruder", "-data-dir", filepath.Join(dir, "data"),
		"-bind", s.IP, "-join", h0.IP, "-bootstrap-expect", "3", "-xenstore-socket", filepath.Join(dir, "xs.sock"),
		"-test-timing", "-encrypt", wrong)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	// Membership's probes and pushes run several times a second under
	// -test-timing: a few seconds is many chances to get in.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, h := range c.Hosts() {
			nodes, err := h.Nodes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if n.Name == "intruder" {
					t.Fatalf("%s lists the intruder: %+v\n%s", h.Name, n, log.String())
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	t.Logf("the intruder's agent said, last:\n%s", strings.Join(lines[max(0, len(lines)-3):], "\n"))
	if after := tlsClusterState(t, h0); after != before {
		t.Fatalf("the cluster changed:\nbefore %s\nafter  %s", before, after)
	}
}
