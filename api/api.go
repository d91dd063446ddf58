// Package api is the agent's HTTP API: the request and response types and a
// typed client. It uses only the standard library so that every tool, test
// and script can link it cheaply. Paths are versioned under /v1/.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultAddr is where an agent serves its API unless told otherwise, and
// where the CLI looks when SHI_AGENT is unset.
const DefaultAddr = "127.0.0.1:7070"

// DefaultXenstoreSocket is the agent's XenStore socket unless told otherwise.
const DefaultXenstoreSocket = "/run/shi/xenstored.sock"

// Environment variables the agent exports to domains and the CLI reads.
const (
	EnvAgent    = "SHI_AGENT"      // API URL, http://IP:PORT
	EnvXenstore = "XENSTORED_PATH" // XenStore socket path (libxenstore reads it too)
)

// Self describes the agent that answers.
type Self struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	API            string `json:"api"`
	XenstoreSocket string `json:"xenstore_socket"`
	Dev            bool   `json:"dev"`
}

// Error is the body of every non-2xx reply.
type Error struct {
	Error string `json:"error"`
}

// AgentURL returns the API URL from SHI_AGENT, or the default.
func AgentURL(getenv func(string) string) string {
	if u := getenv(EnvAgent); u != "" {
		return u
	}
	return "http://" + DefaultAddr
}

// Client is a typed client of one agent.
type Client struct {
	URL  string
	HTTP *http.Client
	// Token, if set, goes with every request as "Authorization: Bearer".
	Token string
}

// NewClient returns a client of the agent at url (http://IP:PORT, or
// unix:PATH for the agent's local socket).
func NewClient(url string) *Client {
	if path, ok := strings.CutPrefix(url, "unix:"); ok {
		return &Client{URL: url, HTTP: unixHTTP(path)}
	}
	return &Client{URL: strings.TrimRight(url, "/"), HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// ErrNoAgent means nothing answered at the client's URL: the request was
// not delivered (errors.As gives the *NoAgentError).
var ErrNoAgent = errors.New("no shi agent answers")

// NoAgentError is ErrNoAgent for one URL: the connection could not be
// made, so the request was never sent and may go elsewhere.
type NoAgentError struct {
	URL string
	Err error // why the connection failed
}

func (e *NoAgentError) Error() string {
	return fmt.Sprintf("%v at %s (start one with 'shi agent -dev', or set %s): %v", ErrNoAgent, e.URL, EnvAgent, e.Err)
}

// Is makes errors.Is(err, ErrNoAgent) true.
func (e *NoAgentError) Is(target error) bool { return target == ErrNoAgent }

func (e *NoAgentError) Unwrap() error { return e.Err }

// ErrNoReply means the agent took the request but no reply came (the
// connection broke, or the client's timeout passed): it may have acted.
var ErrNoReply = errors.New("no reply from the agent")

// Self asks the agent to describe itself.
func (c *Client) Self(ctx context.Context) (Self, error) {
	var s Self
	err := c.do(ctx, http.MethodGet, "/v1/agent/self", nil, &s)
	return s, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base()+path, body)
	if err != nil {
		return err
	}
	c.Authorize(req.Header)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return &NoAgentError{URL: c.URL, Err: op}
		}
		return fmt.Errorf("%w at %s: %v", ErrNoReply, c.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent at %s: %s", c.URL, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// Node is one host as "shi nodes" shows it.
type Node struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	State    string `json:"state"` // alive, failed, left
	Role     string `json:"role"`  // leader, voter, nonvoter, none
	CPUs     int    `json:"cpus"`
	MemTotal uint64 `json:"mem_total"`
	MemFree  uint64 `json:"mem_free"`
	Version  string `json:"version"`
	API      string `json:"api,omitempty"`
}

// Info is the single-image view: the cluster as one machine.
type Info struct {
	Hosts       int    `json:"hosts"`
	HostsAlive  int    `json:"hosts_alive"`
	CPUs        int    `json:"cpus"`
	MemTotal    uint64 `json:"mem_total"`
	MemFree     uint64 `json:"mem_free"`
	Leader      string `json:"leader"`
	Domains     int    `json:"domains"`
	DomainsLive int    `json:"domains_running"`
	Version     string `json:"version"`
}

// Nodes lists the cluster's hosts.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var ns []Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, &ns)
	return ns, err
}

// Info returns the single-image view.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	err := c.do(ctx, http.MethodGet, "/v1/info", nil, &i)
	return i, err
}

// WriteJSON writes v as an API reply with status code; the agent's
// handlers use it so replies look alike everywhere.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes an Error reply, which Client turns back into an error.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, Error{Error: msg})
}
