package cli

import (
	"context"
	"time"

	"shi/api"
	"shi/guest/xs"
)

// agentClient returns a client of the local agent (SHI_AGENT or default).
func agentClient(env *Env) *api.Client { return api.NewClient(api.AgentURL(env.Getenv)) }

// Where findXenstoreSocket found the socket.
const (
	fromEnv     = "env"     // XENSTORED_PATH
	fromAgent   = "agent"   // the local agent's self-description
	fromDefault = "default" // XENSTORED_RUNDIR/socket or the default path
)

// findXenstoreSocket finds the XenStore socket: XENSTORED_PATH, else the
// socket the local agent reports, else XENSTORED_RUNDIR/socket or the
// default path (as libxenstore does). It also says where it looked.
func findXenstoreSocket(ctx context.Context, env *Env) (path, from string) {
	if p := env.Getenv(api.EnvXenstore); p != "" {
		return p, fromEnv
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if s, err := agentClient(env).Self(ctx); err == nil && s.XenstoreSocket != "" {
		return s.XenstoreSocket, fromAgent
	}
	return xs.SocketPath(env.Getenv), fromDefault
}
