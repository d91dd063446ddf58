// Package tlsconf makes and checks the certificates of a cluster's mutual
// TLS: a cluster CA ("shi tls ca create"), one certificate per host
// naming the host and its IP ("shi tls cert create"), and the rule that a
// peer's certificate must name the member at the address it speaks from.
//
// The rule is what keeps one host's certificate from posing as another's:
// a certificate signed by the CA is not enough, it must carry the
// connection's IP as an IP SAN and, as a DNS SAN or its CN, the name of a
// member that membership sees at that IP. Check is pure; Config wires it
// into crypto/tls for both ends of a connection.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// File names "shi tls" writes, as consul tls does.
const (
	CAFile    = "shi-agent-ca.pem"
	CAKeyFile = "shi-agent-ca-key.pem"
)

// CertFile and KeyFile are the names of a host's certificate and key.
func CertFile(node string) string { return "shi-agent-" + node + ".pem" }

// KeyFile is the name of a host's private key file.
func KeyFile(node string) string { return "shi-agent-" + node + "-key.pem" }

// Member is a host as membership sees it: its name and the IP it speaks
// from.
type Member struct {
	Name string
	IP   net.IP
}

// CreateCA returns a new self-signed CA certificate and its key, PEM.
func CreateCA(validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	key, serial, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "shi agent CA " + serial.Text(16)[:8], Organization: []string{"shi"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validFor),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// CreateCert returns a host certificate signed by the CA, naming node (CN
// and DNS SAN) and ips (IP SANs), usable by both ends of a connection.
func CreateCert(caCertPEM, caKeyPEM []byte, node string, ips []net.IP, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	if node == "" {
		return nil, nil, errors.New("tls: a certificate needs a node name")
	}
	ca, caKey, err := parseCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, serial, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: node, Organization: []string{"shi"}},
		DNSNames:     []string{node},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter // a certificate outliving its CA would not verify anyway
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// newKey makes a certificate's key and its random 128-bit serial number.
func newKey() (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return key, serial, err
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("tls: the CA file holds no PEM certificate")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("tls: the CA file's certificate is not a CA")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("tls: the CA key file holds no PEM key")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA key: %w", err)
	}
	if !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, errors.New("tls: the CA key does not belong to the CA certificate")
	}
	return ca, key, nil
}

// Names returns the names a certificate gives its holder: its DNS SANs
// and its CN.
func Names(cert *x509.Certificate) []string {
	names := slices.Clone(cert.DNSNames)
	if cert.Subject.CommonName != "" && !slices.Contains(names, cert.Subject.CommonName) {
		names = append(names, cert.Subject.CommonName)
	}
	return names
}

// Check applies the identity rule to a peer's certificate, already
// verified against the CA: it must carry ip as an IP SAN and name a member
// that members place at ip. It returns that member's name. want, if not
// "", is the member the caller meant to reach, and must be the one named.
func Check(cert *x509.Certificate, ip net.IP, want string, members []Member) (string, error) {
	names := Names(cert)
	if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
		return "", fmt.Errorf("tls: the peer at %s has a certificate for %s (IPs %v), not for its address", ip, strings.Join(names, ","), cert.IPAddresses)
	}
	var elsewhere []string
	for _, n := range names {
		if want != "" && n != want {
			continue
		}
		for _, m := range members {
			if m.Name != n {
				continue
			}
			if m.IP.Equal(ip) {
				return n, nil
			}
			elsewhere = append(elsewhere, fmt.Sprintf("%s is at %s", n, m.IP))
		}
	}
	switch {
	case len(elsewhere) > 0:
		return "", fmt.Errorf("tls: the peer at %s presents a certificate of another member (%s)", ip, strings.Join(elsewhere, ", "))
	case want != "" && !slices.Contains(names, want):
		return "", fmt.Errorf("tls: the peer at %s is not %s: its certificate names %s", ip, want, strings.Join(names, ","))
	}
	return "", fmt.Errorf("tls: the peer at %s names %s, which is not a member of the cluster", ip, strings.Join(names, ","))
}
