package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Config is one host's mutual TLS: the cluster CA, its own certificate,
// and membership's view of who is where.
type Config struct {
	// Roots holds the cluster CA.
	Roots *x509.CertPool
	// Cert is this host's certificate and key.
	Cert tls.Certificate
	// Members returns the cluster's members as membership sees them. A
	// peer not there yet (gossip is a moment behind a new host's first
	// connection) is waited for up to Wait.
	Members func() []Member
	// Wait bounds that wait (default 1 s): Raft, the data plane and
	// forwarded calls all retry a refused connection.
	Wait time.Duration
}

// Load reads the CA, the certificate and its key from PEM files.
func Load(caFile, certFile, keyFile string) (*Config, error) {
	var pems [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		pems[i] = b
	}
	c, err := FromPEM(pems[0], pems[1], pems[2])
	if err != nil {
		return nil, fmt.Errorf("%w (%s, %s, %s)", err, caFile, certFile, keyFile)
	}
	return c, nil
}

// FromPEM is Load from the files' contents.
func FromPEM(caPEM, certPEM, keyPEM []byte) (*Config, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("tls CA: no PEM certificate")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("tls certificate is not signed by the CA: %w", err)
	}
	cert.Leaf = leaf
	return &Config{Roots: roots, Cert: cert}, nil
}

// check verifies a peer's chain against the CA (for usage, the peer's
// role: client or server) and applies Check with membership.
func (c *Config) check(certs []*x509.Certificate, usage x509.ExtKeyUsage, ip net.IP, want string) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("tls: the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: c.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("tls: the peer at %s: %w", ip, err)
	}
	wait := c.Wait
	if wait == 0 {
		wait = time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		var members []Member
		if c.Members != nil {
			members = c.Members()
		}
		name, err := Check(certs[0], ip, want, members)
		if err == nil || time.Now().After(deadline) || !unknown(certs[0], members) {
			return name, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unknown reports whether no name of cert is a member yet.
func unknown(cert *x509.Certificate, members []Member) bool {
	for _, n := range Names(cert) {
		for _, m := range members {
			if m.Name == n {
				return false
			}
		}
	}
	return true
}

// Verify checks the certificate a peer at ip presented on an accepted
// connection (a tls.ConnectionState's PeerCertificates) and returns the
// member it names; the HTTP API uses it for the agents' own endpoints.
func (c *Config) Verify(certs []*x509.Certificate, ip net.IP) (string, error) {
	return c.check(certs, x509.ExtKeyUsageClientAuth, ip, "")
}

// Server returns the configuration of a listener only agents use (Raft,
// the data plane): a client certificate is required and must pass Check
// for the address the connection comes from.
func (c *Config) Server() *tls.Config {
	base := &tls.Config{Certificates: []tls.Certificate{c.Cert}, MinVersion: tls.VersionTLS13}
	base.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		ip := addrIP(hi.Conn.RemoteAddr())
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.ClientAuth = tls.RequireAnyClientCert // verified below, against the CA and membership
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			_, err := c.check(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, ip, "")
			return err
		}
		return cfg, nil
	}
	return base
}

// API returns the configuration of the HTTP API's listener: clients
// without a certificate are served (the CLI has the CA only); a
// certificate given must be the CA's, and Verify decides whether it is a
// member's.
func (c *Config) API() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.Cert},
		ClientCAs:    c.Roots,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}
}

// Client returns the configuration to dial addr ("IP:PORT"): the server
// must pass Check for that IP, and be want if want is not "".
func (c *Config) Client(addr, want string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return &tls.Config{
		Certificates:       []tls.Certificate{c.Cert},
		MinVersion:         tls.VersionTLS12,
		ServerName:         host,
		InsecureSkipVerify: true, // the standard hostname check does not apply: verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if ip == nil {
				return fmt.Errorf("tls: %q is not an IP address", host)
			}
			_, err := c.check(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, ip, want)
			return err
		},
	}
}

// DialContext dials addr over TCP with d and runs the client handshake.
func (c *Config) DialContext(ctx context.Context, d *net.Dialer, addr, want string) (*tls.Conn, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, c.Client(addr, want))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}
