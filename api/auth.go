package api

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Outside -dev every request needs a token, sent as "Authorization:
// Bearer <secret>", except on the agent's local Unix socket, which only
// root (and the agent's own user) may open: there the caller is trusted
// as root on the host is, as with docker.sock.

// EnvToken is the environment variable the CLI takes its token from.
const EnvToken = "SHI_TOKEN"

// DefaultAPISocket is the agent's local API socket unless told otherwise.
const DefaultAPISocket = "/run/shi/api.sock"

// SocketBeside is the API socket an agent serves by default beside its
// XenStore socket: api.sock beside xenstored.sock (so /run/shi/api.sock),
// and NAME.api.sock beside any other NAME.sock, so agents whose XenStore
// sockets share a directory do not share an API socket.
func SocketBeside(xenstoreSocket string) string {
	dir, base := filepath.Split(xenstoreSocket)
	if base == filepath.Base(DefaultXenstoreSocket) {
		return filepath.Join(dir, "api.sock")
	}
	return filepath.Join(dir, strings.TrimSuffix(base, ".sock")+".api.sock")
}

// Authorize adds the client's token, if any, to a request's headers (for
// requests made outside Client's methods, such as a console's WebSocket).
func (c *Client) Authorize(h http.Header) {
	if c.Token != "" {
		h.Set("Authorization", "Bearer "+c.Token)
	}
}

// unixHost stands for the agent in URLs of requests sent to its socket.
const unixHost = "shi-agent"

// Base is the URL requests go to: c.URL, or for a unix: client an HTTP
// URL whose connections go to the socket.
func (c *Client) Base() string {
	if strings.HasPrefix(c.URL, "unix:") {
		return "http://" + unixHost
	}
	return c.URL
}

func unixHTTP(path string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// ClientFromEnv returns the CLI's client of its agent: SHI_AGENT (an
// http:// URL or unix:PATH) with SHI_TOKEN; with neither set, the local
// socket when it answers (beside XENSTORED_PATH's socket, or the
// default), else the default address.
func ClientFromEnv(getenv func(string) string) *Client {
	tok := getenv(EnvToken)
	if getenv(EnvAgent) == "" && tok == "" {
		if p, ok := LocalSocket(getenv); ok {
			return NewClient("unix:" + p)
		}
	}
	c := NewClient(AgentURL(getenv))
	c.Token = tok
	return c
}

// LocalSocket returns the local agent's API socket if one answers.
func LocalSocket(getenv func(string) string) (string, bool) {
	if u, ok := strings.CutPrefix(getenv(EnvAgent), "unix:"); ok {
		return u, true
	}
	for _, p := range localSockets(getenv) {
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			c.Close()
			return p, true
		}
	}
	return "", false
}

func localSockets(getenv func(string) string) []string {
	var out []string
	if x := getenv(EnvXenstore); x != "" {
		out = append(out, SocketBeside(x))
	}
	out = append(out, DefaultAPISocket)
	if os.Geteuid() != 0 {
		// A user's agent serves beside its XenStore socket under its temp
		// dir (see the agent's defaults).
		out = append(out, SocketBeside(filepath.Join(os.TempDir(), "shi-"+strconv.Itoa(os.Geteuid()), "xenstored.sock")))
	}
	return out
}

// WebSocketURL is the ws:// (or wss://) URL of path on the agent.
func (c *Client) WebSocketURL(path string) string {
	return "ws" + strings.TrimPrefix(c.Base(), "http") + path
}

// StreamHTTP is the client's HTTP client without its timeout, for
// long-lived connections such as a console's WebSocket.
func (c *Client) StreamHTTP() *http.Client {
	hc := *c.HTTP
	hc.Timeout = 0
	return &hc
}
