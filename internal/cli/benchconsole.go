package cli

import (
	"context"
	"flag"
	"fmt"
	"net"

	"shi/internal/bench"
)

func init() { benches["console"] = benchConsole }

// benchConsole is "shi bench console": a domain's console seen through
// this host's agent against a pty bridged over TCP (see bench.RunConsole).
func benchConsole(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench console", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	node := fs.String("node", "", "host the domain runs on (the viewer is this host's agent's)")
	backend := fs.String("backend", "", "console_backend: the host serving the console (default the domain's)")
	ptyServer := fs.String("pty-server", "", "IP:PORT of 'shi benchtcp pty' on the domain's host (default: one here, on loopback)")
	mib := fs.Int64("mib", 64, "MiB the program prints per run")
	rounds := fs.Int("rounds", 1000, "keystrokes echoed per run")
	runs := fs.Int("runs", 5, "runs (the median is reported)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := agentClient(env).Self(ctx); err != nil {
		return err
	}
	cl := agentClient(env)
	url := cl.URL
	fmt.Fprintf(env.Stdout, "console benchmark: a domain on %s viewed through %s, %d MiB and %d keystrokes per run, against a pty bridged over TCP\n",
		or(*node, "the host placement picks"), url, *mib, *rounds)
	return bench.RunConsole(ctx, bench.ConsoleConfig{API: url, Token: cl.Token, Node: *node, Backend: *backend, PTYServer: *ptyServer,
		Bytes: *mib << 20, Rounds: *rounds, Runs: *runs}, env.Stdout)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// benchTCPPTY is "shi benchtcp pty -listen IP:PORT": the console
// benchmark's baseline server.
func benchTCPPTY(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi benchtcp pty", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	listen := fs.String("listen", "", "IP:PORT to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "serving ptys on %s\n", ln.Addr())
	if f, ok := env.Stdout.(interface{ Sync() error }); ok {
		f.Sync()
	}
	return bench.ServePTY(ctx, ln)
}
