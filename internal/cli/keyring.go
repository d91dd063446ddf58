package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"

	"shi/api"
)

func init() {
	register("keyring", "the gossip keys of every host: shi keyring list | install KEY | use KEY | remove KEY", runKeyring)
}

const keyringUsage = `usage: shi keyring list [-json]
       shi keyring install KEY   (every host accepts KEY too)
       shi keyring use KEY       (every host sends with KEY)
       shi keyring remove KEY    (every host forgets KEY)

KEY is base64 of 16, 24 or 32 bytes (head -c 32 /dev/urandom | base64). To
rotate without downtime: install the new key, use it, remove the old one.`

func runKeyring(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, keyringUsage)
		return 2
	}
	op := args[0]
	fs := flag.NewFlagSet("shi keyring "+op, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, keyringUsage) }
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	c := agentClient(env)
	var (
		nodes []api.KeyringNode
		err   error
	)
	switch op {
	case "list":
		if fs.NArg() != 0 {
			fs.Usage()
			return 2
		}
		nodes, err = c.Keyring(ctx)
	case api.KeyringInstall, api.KeyringUse, api.KeyringRemove:
		if fs.NArg() != 1 {
			fs.Usage()
			return 2
		}
		nodes, err = c.ChangeKeyring(ctx, op, fs.Arg(0))
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		env.Errorf("keyring %s: %v", op, err)
		return 1
	}
	if *asJSON {
		return printJSON(env, nodes)
	}
	printKeyring(env, nodes)
	return 0
}

// printKeyring shows each key with how many hosts have it installed and
// how many send with it, as consul keyring -list does.
func printKeyring(env *Env, nodes []api.KeyringNode) {
	installed, primary := map[string]int{}, map[string]int{}
	var keys []string
	for _, n := range nodes {
		for _, k := range n.Keys {
			if installed[k] == 0 {
				keys = append(keys, k)
			}
			installed[k]++
		}
		primary[n.Primary]++
	}
	slices.Sort(keys)
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tINSTALLED\tPRIMARY")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\n", k, installed[k], len(nodes), primary[k], len(nodes))
	}
	tw.Flush()
}
