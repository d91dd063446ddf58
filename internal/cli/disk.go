package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"shi/api"
)

func init() {
	register("disk", "a domain's disks: shi disk list DOM | export DOM:DEV [-listen ADDR] | unexport DOM:DEV", runDisk)
}

const diskUsage = `usage: shi disk list DOM
       shi disk export DOM:DEV [-listen ADDR]
       shi disk unexport DOM:DEV

export has the domain's host serve the disk over NBD (export name DEV;
default address that host's, port 10809) until unexport or the domain
ends: qemu-img, nbdcopy, nbdinfo or fio then use it as nbd://ADDR/DEV.`

func runDisk(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, diskUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("shi disk "+sub, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, diskUsage) }
	listen := ""
	if sub == "export" {
		fs.StringVar(&listen, "listen", "", "address to serve on (default: the domain's host's, port 10809)")
	}
	// Flags may come after DOM:DEV, as in the usage line.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	c := agentClient(env)
	switch sub {
	case "list", "ls":
		ds, err := c.Disks(ctx, pos[0])
		if err != nil {
			env.Errorf("disk list %s: %v", pos[0], err)
			return 1
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEV\tHOST\tPATH\tMODE\tEXPORT\tSOCKET")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Dev, d.Host, d.Path, d.Mode, dash(d.Export), dash(d.Socket))
		}
		tw.Flush()
		return 0
	case "export", "unexport":
		dom, dev, ok := strings.Cut(pos[0], ":")
		if !ok || dom == "" || dev == "" {
			env.Errorf("disk %s: want DOM:DEV, got %q", sub, pos[0])
			return 2
		}
		if sub == "unexport" {
			if err := c.UnexportDisk(ctx, dom, dev); err != nil {
				env.Errorf("disk unexport %s: %v", pos[0], err)
				return 1
			}
			return 0
		}
		d, err := c.ExportDisk(ctx, dom, dev, api.DiskExport{Listen: listen})
		if err != nil {
			env.Errorf("disk export %s: %v", pos[0], err)
			return 1
		}
		fmt.Fprintf(env.Stdout, "nbd://%s/%s\n", d.Export, d.Dev)
		return 0
	}
	fmt.Fprintln(env.Stderr, diskUsage)
	return 2
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
