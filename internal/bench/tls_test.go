package bench

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"shi/internal/tlsconf"
)

// The TLS baseline streams between two ends with certificates of one CA,
// and a client without one is refused.
func TestTLSStream(t *testing.T) {
	caCert, caKey, err := tlsconf.CreateCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := tlsconf.CreateCert(caCert, caKey, "h0", []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caCert)
	s, err := ListenTLS("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(nil)
	defer s.Close()
	bps, err := TLSStream(s.Addr(), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"}, 4<<20, 64<<10, 2)
	if err != nil || len(bps) != 2 || bps[0] <= 0 {
		t.Fatalf("%v %v", bps, err)
	}
	if _, err := TLSStream(s.Addr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, 1<<20, 64<<10, 1); err == nil {
		t.Fatal("a client without a certificate streamed")
	}
}
