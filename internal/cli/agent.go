package cli

import (
	"context"
	"time"

	"shi/api"
)

// agentClient returns a client of the local agent (SHI_AGENT or default).
func agentClient(env *Env) *api.Client { return api.NewClient(api.AgentURL(env.Getenv)) }

// findXenstoreSocket finds the XenStore socket the way domains do:
// XENSTORED_PATH, else the socket the local agent reports, else the
// default path.
func findXenstoreSocket(ctx context.Context, env *Env) string {
	if p := env.Getenv(api.EnvXenstore); p != "" {
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if s, err := agentClient(env).Self(ctx); err == nil && s.XenstoreSocket != "" {
		return s.XenstoreSocket
	}
	return api.DefaultXenstoreSocket
}
