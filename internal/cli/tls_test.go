package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shi/api"
	"shi/internal/tlsconf"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code = Run(context.Background(), env, args)
	return code, o.String(), e.String()
}

func TestTLSCreate(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI("tls", "ca", "create", "-dir", dir); code != 0 {
		t.Fatalf("ca create: %d %s", code, stderr)
	}
	if code, _, _ := runCLI("tls", "ca", "create", "-dir", dir); code == 0 {
		t.Fatal("ca create overwrote the CA")
	}
	if code, out, stderr := runCLI("tls", "cert", "create", "-dir", dir, "-node", "h0", "-ip", "10.0.0.1"); code != 0 || !strings.Contains(out, "shi-agent-h0.pem") {
		t.Fatalf("cert create: %d %s %s", code, out, stderr)
	}
	for _, bad := range [][]string{
		{"-node", "h1"},                     // no IP
		{"-ip", "10.0.0.2"},                 // no name
		{"-node", "h1", "-ip", "not-an-ip"}, // bad IP
	} {
		if code, _, _ := runCLI(append([]string{"tls", "cert", "create", "-dir", dir}, bad...)...); code == 0 {
			t.Errorf("cert create %v succeeded", bad)
		}
	}
	c, err := tlsconf.Load(filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CertFile("h0")), filepath.Join(dir, tlsconf.KeyFile("h0")))
	if err != nil {
		t.Fatal(err)
	}
	if got := tlsconf.Names(c.Cert.Leaf); len(got) != 1 || got[0] != "h0" || len(c.Cert.Leaf.IPAddresses) != 1 || c.Cert.Leaf.IPAddresses[0].String() != "10.0.0.1" {
		t.Fatalf("certificate names %v at %v", got, c.Cert.Leaf.IPAddresses)
	}
	if fi, err := os.Stat(filepath.Join(dir, tlsconf.CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi.Mode(), err)
	}
}

func TestCAFlag(t *testing.T) {
	base := &Env{Getenv: func(k string) string { return "env-" + k }}
	for _, args := range [][]string{{"-ca", "x.pem", "nodes"}, {"-ca=x.pem", "nodes"}, {"--ca", "x.pem", "nodes"}} {
		env, rest := caFlag(base, args)
		if env.Getenv(api.EnvCACert) != "x.pem" || len(rest) != 1 || rest[0] != "nodes" || env.Getenv("OTHER") != "env-OTHER" {
			t.Errorf("%v: CA %q, rest %v", args, env.Getenv(api.EnvCACert), rest)
		}
	}
	if env, rest := caFlag(base, []string{"nodes"}); env != base || len(rest) != 1 {
		t.Error("no -ca changed the environment")
	}
}
