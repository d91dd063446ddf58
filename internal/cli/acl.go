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
	register("acl", "API tokens: shi acl token create -name N [-read-only] | list | delete ID|NAME", runACL)
}

const aclUsage = `usage: shi acl token create -name NAME [-read-only] [-secret-only]
       shi acl token list [-json]
       shi acl token delete ID|NAME

Outside -dev every API request needs a token (SHI_TOKEN or -token); a
read-only token reads nodes, info, list and /metrics. Root on an agent's
host needs none: the CLI uses the agent's local socket when neither
SHI_AGENT nor a token is given.`

func runACL(ctx context.Context, env *Env, args []string) int {
	if len(args) < 2 || args[0] != "token" {
		fmt.Fprintln(env.Stderr, aclUsage)
		return 2
	}
	switch args[1] {
	case "create":
		return aclCreate(ctx, env, args[2:])
	case "list":
		return aclList(ctx, env, args[2:])
	case "delete":
		return aclDelete(ctx, env, args[2:])
	}
	fmt.Fprintln(env.Stderr, aclUsage)
	return 2
}

func aclCreate(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi acl token create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	name := fs.String("name", "", "the token's name (shown in lists and in the agents' logs of creates and destroys)")
	ro := fs.Bool("read-only", false, "reads only: nodes, info, list, /metrics")
	secretOnly := fs.Bool("secret-only", false, "print only the secret (for scripts)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *name == "" || fs.NArg() > 0 {
		fmt.Fprintln(env.Stderr, aclUsage)
		return 2
	}
	t, err := agentClient(env).CreateToken(ctx, api.ACLTokenRequest{Name: *name, ReadOnly: *ro})
	if err != nil {
		env.Errorf("acl token create: %v", err)
		return 1
	}
	if *secretOnly {
		fmt.Fprintln(env.Stdout, t.Secret)
		return 0
	}
	fmt.Fprintf(env.Stdout, "ID:      %s\nName:    %s\nType:    %s\nSecret:  %s\n(the secret is shown only now; the cluster keeps a hash of it)\n", t.ID, t.Name, tokenType(t), t.Secret)
	return 0
}

func tokenType(t api.ACLToken) string {
	if t.ReadOnly {
		return "read-only"
	}
	return "management"
}

func aclList(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi acl token list", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ts, err := agentClient(env).Tokens(ctx)
	if err != nil {
		env.Errorf("acl token list: %v", err)
		return 1
	}
	if *asJSON {
		return printJSON(env, ts)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tCREATED")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, tokenType(t), t.Created.Format("2006-01-02 15:04:05Z"))
	}
	tw.Flush()
	return 0
}

func aclDelete(ctx context.Context, env *Env, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(env.Stderr, aclUsage)
		return 2
	}
	if err := agentClient(env).DeleteToken(ctx, args[0]); err != nil {
		env.Errorf("acl token delete %s: %v", args[0], err)
		return 1
	}
	return 0
}

// takeToken takes "-token T" (or -token=T, --token) out of a command
// line, before any "--", so that every command accepts it; a given
// token stands for SHI_TOKEN.
func takeToken(env *Env, args []string) (*Env, []string, error) {
	var out []string
	tok, found := "", false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if c, ok := commands[a]; ok && len(out) == 0 && strings.HasPrefix(c.short, "(internal)") {
			// An internal command's arguments are a program's (the
			// console helper's): left alone.
			out = append(out, args[i:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || strings.TrimPrefix(name, "-") != "token" {
			out = append(out, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return env, nil, fmt.Errorf("flag needs an argument: -token")
			}
			i++
			val = args[i]
		}
		tok, found = val, true
	}
	if !found {
		return env, args, nil
	}
	e := *env
	getenv := env.Getenv
	e.Getenv = func(k string) string {
		if k == api.EnvToken {
			return tok
		}
		return getenv(k)
	}
	return &e, out, nil
}
