// Package cli implements the shi subcommands other than "agent", one file per
// subcommand. It reaches the agent only through the api client and the
// XenStore socket, never through agent internals.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Env is what a subcommand may use: its streams and the environment, so
// tests can run commands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// OSEnv is the process's own environment.
func OSEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Errorf prints "shi: ..." to stderr.
func (e *Env) Errorf(format string, args ...any) {
	fmt.Fprintf(e.Stderr, "shi: "+format+"\n", args...)
}

type command struct {
	run   func(ctx context.Context, env *Env, args []string) int
	short string
}

var commands = map[string]command{}

// register adds a subcommand; called from init in each subcommand's file.
func register(name, short string, run func(ctx context.Context, env *Env, args []string) int) {
	commands[name] = command{run: run, short: short}
}

// Run runs the subcommand named by args[0] and returns the exit code.
func Run(ctx context.Context, env *Env, args []string) int {
	env, args, err := takeToken(env, args)
	if err != nil {
		env.Errorf("%v", err)
		return 2
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		Usage(env.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if env, args = caFlag(env, args); len(args) == 0 {
		Usage(env.Stderr)
		return 2
	}
	c, ok := commands[args[0]]
	if !ok {
		env.Errorf("unknown command %q (see 'shi help')", args[0])
		return 2
	}
	return c.run(ctx, env, args[1:])
}

// Usage prints the list of subcommands.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "usage: shi <command> [arguments]\n\ncommands:")
	fmt.Fprintf(w, "  %-10s %s\n", "agent", "run the per-host agent (shi agent -dev for a one-host cluster)")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !strings.HasPrefix(c.short, "(internal)") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].short)
	}
	fmt.Fprintln(w, "\nRun 'shi <command> -h' for a command's flags. Every command takes -token T\n(or SHI_TOKEN) for an agent's API outside -dev.")
}
