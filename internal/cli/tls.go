package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"shi/api"
	"shi/internal/tlsconf"
)

func init() {
	register("tls", "make the cluster's TLS files: shi tls ca create | shi tls cert create -node NAME -ip IP", runTLS)
}

const tlsUsage = `usage: shi tls ca create [-dir DIR] [-days N]
       shi tls cert create -node NAME -ip IP[,IP] [-dir DIR] [-ca FILE] [-ca-key FILE] [-days N]

ca create writes the cluster CA, ` + tlsconf.CAFile + ` and ` + tlsconf.CAKeyFile + `
(keep the key off the hosts). cert create writes one host's certificate,
shi-agent-NAME.pem and shi-agent-NAME-key.pem, naming the host (its -name) and
its IP (its -bind): agents accept a peer only if its certificate names the
member at the address it speaks from. Start each agent with
  -tls-ca ` + tlsconf.CAFile + ` -tls-cert shi-agent-NAME.pem -tls-key shi-agent-NAME-key.pem
and give the CLI the CA with SHI_CACERT=` + tlsconf.CAFile + ` (or shi -ca FILE ...).`

func runTLS(ctx context.Context, env *Env, args []string) int {
	if len(args) < 2 || args[1] != "create" || (args[0] != "ca" && args[0] != "cert") {
		fmt.Fprintln(env.Stderr, tlsUsage)
		return 2
	}
	fs := flag.NewFlagSet("shi tls "+args[0]+" create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, tlsUsage); fs.PrintDefaults() }
	dir := fs.String("dir", ".", "directory to write the files in")
	days := fs.Int("days", 0, "validity in days (default: CA 5 years, host 1 year)")
	node := fs.String("node", "", "cert: the host's name in the cluster (the agent's -name)")
	ips := fs.String("ip", "", "cert: the host's IP addresses, comma-separated (the agent's -bind)")
	caFile := fs.String("ca", "", "cert: the CA certificate (default DIR/"+tlsconf.CAFile+")")
	caKey := fs.String("ca-key", "", "cert: the CA key (default DIR/"+tlsconf.CAKeyFile+")")
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		env.Errorf("tls: unexpected arguments: %s", strings.Join(fs.Args(), " "))
		return 2
	}
	valid := func(def int) time.Duration {
		if *days > 0 {
			def = *days
		}
		return time.Duration(def) * 24 * time.Hour
	}
	var (
		files     []string
		cert, key []byte
		err       error
	)
	if args[0] == "ca" {
		files = []string{tlsconf.CAFile, tlsconf.CAKeyFile}
		cert, key, err = tlsconf.CreateCA(valid(5 * 365))
	} else {
		files = []string{tlsconf.CertFile(*node), tlsconf.KeyFile(*node)}
		cert, key, err = createHostCert(*dir, *caFile, *caKey, *node, *ips, valid(365))
	}
	if err != nil {
		env.Errorf("tls: %v", err)
		return 1
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		env.Errorf("tls: %v", err)
		return 1
	}
	for i, b := range [][]byte{cert, key} {
		p := filepath.Join(*dir, files[i])
		// O_EXCL: never overwrite a CA or key in place by mistake.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.Write(b)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			env.Errorf("tls: %v", err)
			return 1
		}
		fmt.Fprintf(env.Stdout, "==> wrote %s\n", p)
	}
	return 0
}

func createHostCert(dir, caFile, caKey, node, ips string, valid time.Duration) (cert, key []byte, err error) {
	if node == "" {
		return nil, nil, errors.New("cert create needs -node NAME (the host's -name)")
	}
	var addrs []net.IP
	for _, s := range strings.Split(ips, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, fmt.Errorf("-ip %q is not an IP address", s)
		}
		addrs = append(addrs, ip)
	}
	if len(addrs) == 0 {
		return nil, nil, errors.New("cert create needs -ip IP (the host's -bind): peers check it")
	}
	if caFile == "" {
		caFile = filepath.Join(dir, tlsconf.CAFile)
	}
	if caKey == "" {
		caKey = filepath.Join(dir, tlsconf.CAKeyFile)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(caKey)
	if err != nil {
		return nil, nil, err
	}
	return tlsconf.CreateCert(caPEM, keyPEM, node, addrs, valid)
}

// caFlag takes a leading "-ca FILE" (before the command, as in
// "shi -ca ca.pem nodes"): the CLI then verifies the agent's HTTPS
// certificate with FILE, as with SHI_CACERT=FILE.
func caFlag(env *Env, args []string) (*Env, []string) {
	var file string
	switch {
	case len(args) >= 2 && (args[0] == "-ca" || args[0] == "--ca"):
		file, args = args[1], args[2:]
	case len(args) >= 1 && (strings.HasPrefix(args[0], "-ca=") || strings.HasPrefix(args[0], "--ca=")):
		_, file, _ = strings.Cut(args[0], "=")
		args = args[1:]
	default:
		return env, args
	}
	e := *env
	e.Getenv = func(k string) string {
		if k == api.EnvCACert {
			return file
		}
		return env.Getenv(k)
	}
	return &e, args
}
