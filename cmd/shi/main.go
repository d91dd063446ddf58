// Command shi is the single binary of shi: "shi agent" runs the per-host
// agent; every other subcommand is a client of a running agent.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"shi/internal/agent"
	"shi/internal/bench"
	"shi/internal/cli"
)

func main() {
	// Benchmarks re-run this binary as their second process.
	bench.RunChild()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agent.Main(ctx, os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(cli.Run(ctx, cli.OSEnv(), os.Args[1:]))
}
