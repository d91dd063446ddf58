package cli

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"

	"shi/internal/bench"
)

// benches are the workloads of "shi bench NAME".
var benches = map[string]func(ctx context.Context, env *Env, args []string) error{
	"xenstore": benchXenstore,
}

func init() {
	register("bench", "run a benchmark against the running agent (shi bench -list)", runBench)
}

func runBench(ctx context.Context, env *Env, args []string) int {
	names := make([]string, 0, len(benches))
	for n := range benches {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 || args[0] == "-list" || args[0] == "-h" || args[0] == "-help" {
		fmt.Fprintf(env.Stderr, "usage: shi bench NAME [flags]\n\nbenchmarks: %s\n", strings.Join(names, ", "))
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	b, ok := benches[args[0]]
	if !ok {
		env.Errorf("bench: unknown benchmark %q (have: %s)", args[0], strings.Join(names, ", "))
		return 2
	}
	if err := b(ctx, env, args[1:]); err != nil {
		env.Errorf("bench %s: %v", args[0], err)
		return 1
	}
	return 0
}

func benchXenstore(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench xenstore", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	n := fs.Int("domains", 300, "domains to start and shut down")
	base := fs.Int("base-domid", 20000, "first domid the workload uses")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sock, _ := findXenstoreSocket(ctx, env)
	fmt.Fprintf(env.Stdout, "xenstore toolstack workload against %s: %d domains, one transaction each to start and to stop\n", sock, *n)
	return bench.RunXenstore(ctx, bench.XenstoreConfig{Socket: sock, Domains: *n, Base: *base}, env.Stdout)
}
