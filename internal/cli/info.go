package cli

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register("info", "show the cluster as one machine: CPUs, memory, hosts, leader, domains", runInfo)
}

func runInfo(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi info", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	i, err := agentClient(env).Info(ctx)
	if err != nil {
		env.Errorf("%v", err)
		return 1
	}
	if *asJSON {
		return printJSON(env, i)
	}
	leader := i.Leader
	if leader == "" {
		leader = "(none: no quorum)"
	}
	fmt.Fprintf(env.Stdout, "hosts:    %d (%d alive)\n", i.Hosts, i.HostsAlive)
	fmt.Fprintf(env.Stdout, "cpus:     %d\n", i.CPUs)
	fmt.Fprintf(env.Stdout, "memory:   %s total, %s free\n", bytesIEC(i.MemTotal), bytesIEC(i.MemFree))
	fmt.Fprintf(env.Stdout, "leader:   %s\n", leader)
	fmt.Fprintf(env.Stdout, "domains:  %d (%d running)\n", i.Domains, i.DomainsLive)
	fmt.Fprintf(env.Stdout, "version:  %s\n", i.Version)
	return 0
}
