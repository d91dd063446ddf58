package cli

import (
	"context"
	"flag"
	"fmt"

	"shi/api"
	"shi/internal/bench"
)

func init() {
	register("benchdomain", "(internal) one side of a domain benchmark, run inside a domain by shi bench", runBenchDomain)
	benches["evtchn"] = benchEvtchn
	benches["ring"] = benchRing
}

// runBenchDomain is what the domains of "shi bench evtchn|ring" run.
// DomainMain returns only on failure: a finished domain waits to be
// destroyed.
func runBenchDomain(ctx context.Context, env *Env, args []string) int {
	env.Errorf("benchdomain: %v", bench.DomainMain(args))
	return 1
}

// domainFlags are the flags every domain benchmark has.
type domainFlags struct {
	node, hosts, profile *string
}

// addDomainFlags adds -node, -hosts and -cpuprofile to a domain
// benchmark's flags.
func addDomainFlags(fs *flag.FlagSet) domainFlags {
	return domainFlags{
		node:    fs.String("node", "", "host to run both domains on"),
		hosts:   fs.String("hosts", "", "A,B: the first domain on host A, the second on host B (shi alone across hosts, no local baseline)"),
		profile: fs.String("cpuprofile", "", "directory (writable by the domains' uids) for a CPU profile of each domain"),
	}
}

// domainsConfig checks the placement flags, finds the agent the
// benchmark's domains start through, and says so plainly when none
// answers.
func domainsConfig(ctx context.Context, env *Env, f domainFlags) (bench.DomainsConfig, error) {
	dc, err := bench.Placement(*f.node, *f.hosts)
	if err != nil {
		return dc, err
	}
	dc.ProfileDir = *f.profile
	if _, err := agentClient(env).Self(ctx); err != nil {
		return dc, err
	}
	cl := agentClient(env)
	fmt.Fprintf(env.Stdout, "starting two domains through %s\n", cl.URL)
	dc.API, dc.Token = cl.URL, cl.Token
	dc.CACert = env.Getenv(api.EnvCACert)
	dc.Xenstore, _ = findXenstoreSocket(ctx, env)
	return dc, nil
}

func benchEvtchn(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench evtchn", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	rounds := fs.Int("rounds", 10000, "round trips per run")
	runs := fs.Int("runs", 11, "runs (the median is reported)")
	df := addDomainFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	dc, err := domainsConfig(ctx, env, df)
	if err != nil {
		return err
	}
	return bench.RunEvtchn(ctx, bench.EvtchnConfig{DomainsConfig: dc, Rounds: *rounds, Runs: *runs}, env.Stdout)
}

func benchRing(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench ring", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	mib := fs.Int64("mib", 1024, "MiB streamed per run")
	chunk := fs.Int("chunk", 64, "KiB per write, on both paths")
	pages := fs.Int("pages", 1024, "data pages of the ring (a power of two)")
	runs := fs.Int("runs", 5, "runs (the median is reported)")
	maps := fs.Int("maps", 2000, "grant map+unmap cycles timed")
	spin := fs.Int("spin", 0, "µs the pipe polls before sleeping (0: the library's default, -1: none)")
	df := addDomainFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	dc, err := domainsConfig(ctx, env, df)
	if err != nil {
		return err
	}
	return bench.RunRing(ctx, bench.RingConfig{DomainsConfig: dc, Bytes: *mib << 20, Chunk: *chunk << 10,
		RingPages: *pages, Runs: *runs, MapRounds: *maps, SpinMicros: *spin}, env.Stdout)
}
