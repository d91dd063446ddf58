package cli

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"
)

func init() {
	register("list", "list every domain of the cluster: id, name, host, state, memory, memory and CPU used, uptime", runList)
}

func runList(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi list", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		env.Errorf("list: unexpected arguments")
		return 2
	}
	ds, err := agentClient(env).ListDomainsUsage(ctx)
	if err != nil {
		env.Errorf("%v", err)
		return 1
	}
	if *asJSON {
		return printJSON(env, ds)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHOST\tSTATE\tMEMORY\tUSED\tCPU\tUPTIME")
	for _, d := range ds {
		up := "-"
		if d.State == "running" {
			up = d.Uptime(now).Round(time.Second).String()
		}
		// Used: what its host's cgroup counts ("-": not running,
		// uncontained, or its host did not answer in time).
		used, cpu := "-", "-"
		if u := d.Usage; u != nil {
			used, cpu = bytesIEC(u.MemoryBytes), fmt.Sprintf("%.1fs", u.CPUSeconds)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Name, d.Host, d.State, bytesIEC(d.MemoryMiB<<20), used, cpu, up)
	}
	tw.Flush()
	return 0
}
