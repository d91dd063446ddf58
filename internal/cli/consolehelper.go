package cli

import (
	"context"
	"os"

	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/devices/console"
	"shi/internal/devices/disknbd"
)

func init() {
	register("console-helper", "(internal) a domain's first process: its program on a terminal joined to its console, its disks served as NBD", runConsoleHelper)
}

// runConsoleHelper is started by the agent as a domain's first process:
// shi console-helper PATH ARGV0 [ARG...]. The disks named in its
// environment are served before the program starts, so it finds them.
func runConsoleHelper(ctx context.Context, env *Env, args []string) int {
	console.ReserveThreads(console.HelperThreads)
	targets, err := disknbd.Targets(os.Environ())
	if err != nil {
		env.Errorf("console-helper: %v", err)
		return 1
	}
	if len(targets) > 0 {
		hvc, err := hv.Self()
		if err != nil {
			env.Errorf("console-helper: %v", err)
			return 1
		}
		xsc, err := xs.OpenEnv()
		if err != nil {
			env.Errorf("console-helper: %v", err)
			return 1
		}
		defer xsc.Close()
		disks, err := disknbd.Serve(hvc, xsc, targets, func(f string, a ...any) { env.Errorf("console-helper: "+f, a...) })
		defer func() {
			if err := disks.Close(); err != nil {
				env.Errorf("console-helper: %v", err)
			}
		}()
		if err != nil {
			// As xl create: a domain whose disk cannot attach does not run.
			env.Errorf("console-helper: %v", err)
			return 1
		}
	}
	code, err := console.RunHelper(args, env.Stdout)
	if err != nil {
		env.Errorf("console-helper: %v", err)
	}
	return code
}
