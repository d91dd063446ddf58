package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"shi/api"
)

func init() {
	register("create", "start a domain from an xl-style config: shi create FILE.cfg [-node N]", runCreate)
}

func runCreate(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	node := fs.String("node", "", "host to run the domain on (default: the live host with the most free memory)")
	asJSON := fs.Bool("json", false, "print the new domain as JSON")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "usage: shi create FILE.cfg [-node N] [-json]")
		fs.PrintDefaults()
	}
	// Flags may come before or after the file.
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	file := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		env.Errorf("create: unexpected arguments after %s", file)
		return 2
	}
	text, err := os.ReadFile(file)
	if err != nil {
		env.Errorf("create: %v", err)
		return 1
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		env.Errorf("create: %v", err)
		return 1
	}
	d, err := agentClient(env).CreateDomain(ctx, api.DomainSpec{Config: string(text), Dir: dir, Node: *node})
	if err != nil {
		env.Errorf("create %s: %v", file, err)
		return 1
	}
	if *asJSON {
		return printJSON(env, d)
	}
	fmt.Fprintf(env.Stdout, "created domain %s (id %d) on %s\n", d.Name, d.ID, d.Host)
	return 0
}
