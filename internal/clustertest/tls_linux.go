package clustertest

import (
	"crypto/tls"
	"os/exec"
	"path/filepath"
	"strconv"

	"shi/api"
	"shi/internal/tlsconf"
)

// With Options.TLS the cluster runs with mutual TLS: Start makes a CA and
// one certificate per host with "shi tls", as an operator would, and the
// harness's clients trust the CA.

// makeTLS writes the CA and each host's certificate into c.TLSDir.
func (c *Cluster) makeTLS(dir string) {
	c.TLSDir = dir
	run := func(args ...string) {
		out, err := exec.Command(c.Bin, append([]string{"tls"}, args...)...).CombinedOutput()
		if err != nil {
			c.t.Fatalf("clustertest: shi tls %v: %v\n%s", args, err, out)
		}
	}
	run("ca", "create", "-dir", dir)
	for i, nh := range c.NS.Hosts()[:c.opts.Hosts] { // strangers get none
		run("cert", "create", "-dir", dir, "-node", "h"+strconv.Itoa(i), "-ip", nh.IP)
	}
}

// scheme is the API's URL scheme.
func (c *Cluster) scheme() string {
	if c.opts.TLS {
		return "https"
	}
	return "http"
}

// tlsArgs are a host's TLS flags.
func (h *Host) tlsArgs() []string {
	if !h.c.opts.TLS {
		return nil
	}
	d := h.c.TLSDir
	return []string{"-tls-ca", filepath.Join(d, tlsconf.CAFile),
		"-tls-cert", filepath.Join(d, tlsconf.CertFile(h.Name)), "-tls-key", filepath.Join(d, tlsconf.KeyFile(h.Name))}
}

// clientTLS is what the harness's API clients verify agents with (nil
// without TLS).
func (c *Cluster) clientTLS() *tls.Config {
	if !c.opts.TLS {
		return nil
	}
	cfg, err := api.CAConfig(filepath.Join(c.TLSDir, tlsconf.CAFile))
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// tlsEnv points the CLI at the CA.
func (c *Cluster) tlsEnv() []string {
	if !c.opts.TLS {
		return nil
	}
	return []string{api.EnvCACert + "=" + filepath.Join(c.TLSDir, tlsconf.CAFile)}
}
