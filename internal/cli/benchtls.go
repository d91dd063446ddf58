package cli

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"

	"shi/internal/bench"
	"shi/internal/tlsconf"
)

// The TLS stream baseline of "scripts/bench-remote.sh ring" with TLS=1:
// the benchtcp stream inside mutual TLS, with the certificates the
// agents run with.

type tlsFlags struct{ ca, cert, key *string }

func addTLSFlags(fs *flag.FlagSet) tlsFlags {
	return tlsFlags{
		ca:   fs.String("tls-ca", "", "TLS baseline: the cluster CA (shi tls ca create)"),
		cert: fs.String("tls-cert", "", "TLS baseline: this host's certificate"),
		key:  fs.String("tls-key", "", "TLS baseline: this host's key"),
	}
}

func (f tlsFlags) load() (*tlsconf.Config, error) {
	return tlsconf.Load(*f.ca, *f.cert, *f.key)
}

func tlsBaselineServer(addr string, f tlsFlags) (*bench.TLSServer, error) {
	c, err := f.load()
	if err != nil {
		return nil, err
	}
	return bench.ListenTLS(addr, &tls.Config{Certificates: []tls.Certificate{c.Cert}, ClientCAs: c.Roots, ClientAuth: tls.RequireAndVerifyClientCert})
}

func tlsBaselineStream(env *Env, addr string, f tlsFlags, mib int64, chunk, runs int) error {
	c, err := f.load()
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	bps, err := bench.TLSStream(addr, &tls.Config{Certificates: []tls.Certificate{c.Cert}, RootCAs: c.Roots, ServerName: host}, mib<<20, chunk<<10, runs)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "TLS stream of %d MiB in %d KiB writes to %s, mutual TLS (crypto/tls), TCP_NODELAY (%d runs)\n", mib, chunk, addr, runs)
	fmt.Fprintln(env.Stdout, bench.GBFigure(bench.FigTLSStream, bps).Line())
	return nil
}
