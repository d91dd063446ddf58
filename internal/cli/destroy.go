package cli

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register("destroy", "destroy a domain by id or name: shi destroy DOM", runDestroy)
}

func runDestroy(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi destroy", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, "usage: shi destroy DOM (an id or a name)") }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if err := agentClient(env).DestroyDomain(ctx, fs.Arg(0)); err != nil {
		env.Errorf("destroy %s: %v", fs.Arg(0), err)
		return 1
	}
	return 0
}
