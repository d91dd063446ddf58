package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"
)

// EnvCACert is the environment variable naming the CA file the CLI
// verifies an HTTPS agent with (the cluster's shi-agent-ca.pem), as
// consul's CONSUL_CACERT.
const EnvCACert = "SHI_CACERT"

// CAConfig returns a TLS configuration trusting only the CA certificates
// in file.
func CAConfig(file string) (*tls.Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvCACert, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", EnvCACert, file)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// UseCA makes c verify its agent's HTTPS certificate against the CA in
// file. If the file cannot be used, every request of c fails saying why.
func (c *Client) UseCA(file string) {
	cfg, err := CAConfig(file)
	if err != nil {
		c.HTTP = &http.Client{Transport: failing{err}}
		return
	}
	timeout := 30 * time.Second
	if c.HTTP != nil {
		timeout = c.HTTP.Timeout
	}
	c.HTTP = &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 4}}
}

type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }
