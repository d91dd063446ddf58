package cli

import (
	"context"

	"shi/internal/devices/console"
)

func init() {
	register("console-helper", "(internal) a domain's first process: its program on a terminal joined to its console", runConsoleHelper)
}

// runConsoleHelper is started by the agent as a domain's first process:
// shi console-helper PATH ARGV0 [ARG...].
func runConsoleHelper(ctx context.Context, env *Env, args []string) int {
	code, err := console.RunHelper(args, env.Stdout)
	if err != nil {
		env.Errorf("console-helper: %v", err)
	}
	return code
}
