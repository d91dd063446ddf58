package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"shi/internal/bench"
)

func init() { benches["disk"] = benchDisk }

// benchDisk is "shi bench disk": fio through a domain's disk against
// nbdkit serving the same image (run as root on the domain's host: the
// disk's NBD socket is root's to connect to).
func benchDisk(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi bench disk", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	runtime := fs.Duration("runtime", 3*time.Second, "length of each fio run")
	size := fs.Int64("size", 256, "MiB of the image made when -image does not exist")
	image := fs.String("image", "", "raw image file (made if missing; default: a temporary one)")
	runs := fs.Int("runs", 3, "rounds, each running every workload on every path (the median is reported)")
	node := fs.String("node", "", "host of the domain and its disk")
	hosts := fs.String("hosts", "", "A,B: the domain on host A, its disk's back end on host B (needs -nbdkit)")
	nbdkit := fs.String("nbdkit", "", "URI of an nbdkit serving the image already (across hosts: on the disk's host, over TCP)")
	quick := fs.Bool("quick", false, "the headline workload (4k randread QD32) alone")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := bench.DiskConfig{Image: *image, Size: *size << 20, Runtime: *runtime, Runs: *runs, NbdkitURI: *nbdkit}
	switch {
	case *node != "" && *hosts != "":
		return fmt.Errorf("give -node or -hosts, not both")
	case *hosts != "":
		h, err := bench.ParseHosts(*hosts)
		if err != nil {
			return err
		}
		cfg.Hosts = h
	case *node != "":
		cfg.Hosts = [2]string{*node, *node}
	}
	if *quick {
		cfg.Workloads = bench.DiskWorkloads[:1]
	}
	if _, err := agentClient(env).Self(ctx); err != nil {
		return err
	}
	cfg.API = localAPI(env)
	return bench.RunDisk(ctx, cfg, env.Stdout)
}
