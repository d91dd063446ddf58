package cli

import (
	"context"
	"strings"
	"time"

	"shi/api"
	"shi/guest/xs"
)

// agentClient returns a client of the local agent: SHI_AGENT (or the
// default) with SHI_TOKEN, or without either the agent's local socket
// (api.ClientFromEnv).
func agentClient(env *Env) *api.Client {
	c := api.ClientFromEnv(env.Getenv)
	if ca := env.Getenv(api.EnvCACert); ca != "" && strings.HasPrefix(c.URL, "https:") {
		c.UseCA(ca) // a cluster with TLS: the agent's certificate is the cluster CA's
	}
	return c
}

// localAPI is the API URL for code that takes a URL but no token (the
// disk benchmark): the local agent's socket when it answers (root on an
// agent's host), else SHI_AGENT or the default.
func localAPI(env *Env) string {
	if p, ok := api.LocalSocket(env.Getenv); ok {
		return "unix:" + p
	}
	return api.AgentURL(env.Getenv)
}

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
