package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"
)

func init() {
	register("nodes", "list the cluster's hosts: state, raft role, CPUs, memory", runNodes)
}

func runNodes(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi nodes", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ns, err := agentClient(env).Nodes(ctx)
	if err != nil {
		env.Errorf("%v", err)
		return 1
	}
	if *asJSON {
		return printJSON(env, ns)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tROLE\tCPUS\tMEMORY\tFREE")
	for _, n := range ns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, n.Addr, n.State, n.Role, n.CPUs, bytesIEC(n.MemTotal), bytesIEC(n.MemFree))
	}
	tw.Flush()
	return 0
}

func printJSON(env *Env, v any) int {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		env.Errorf("%v", err)
		return 1
	}
	return 0
}

// bytesIEC formats a byte count as KiB/MiB/GiB.
func bytesIEC(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTP"[exp])
}
