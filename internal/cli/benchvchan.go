package cli

import (
	"context"
	"flag"

	"shi/internal/bench"
)

func init() { benches["vchan"] = benchVchan }

// benchVchan is "shi bench vchan": guest/vchan between two domains
// against a Unix socket (or, with -hosts, alone, for
// scripts/bench-remote.sh vchan).
func benchVchan(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench vchan", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	mib := fs.Int64("mib", 1024, "MiB streamed per run")
	chunk := fs.Int("chunk", 64, "KiB per write, on both paths")
	order := fs.Int("order", 20, "log2 of both rings' size (12..20, paged; 20 is 1 MiB)")
	rounds := fs.Int("rounds", 10000, "16-byte round trips per run")
	runs := fs.Int("runs", 5, "runs (the median is reported)")
	spin := fs.Int("spin", 0, "µs a vchan polls before sleeping (0: the library's default, -1: none)")
	df := addDomainFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	dc, err := domainsConfig(ctx, env, df)
	if err != nil {
		return err
	}
	return bench.RunVchan(ctx, bench.VchanConfig{DomainsConfig: dc, Bytes: *mib << 20, Chunk: *chunk << 10,
		Order: *order, Rounds: *rounds, Runs: *runs, SpinMicros: *spin}, env.Stdout)
}
