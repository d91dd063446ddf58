package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// DomainSpec asks for a new domain.
type DomainSpec struct {
	// Config is the xl-style config file's text.
	Config string `json:"config"`
	// Dir is the directory of the config file: a relative cmd in it is
	// taken from there.
	Dir string `json:"dir,omitempty"`
	// Node is the host to run on; empty lets placement choose.
	Node string `json:"node,omitempty"`
}

// Domain is one domain of the cluster.
type Domain struct {
	ID        uint32          `json:"id"`
	Name      string          `json:"name"`
	Host      string          `json:"host"`
	State     string          `json:"state"` // running, crashed (dead: from older agents)
	MemoryMiB uint64          `json:"memory_mib"`
	UUID      string          `json:"uuid,omitempty"`
	Created   time.Time       `json:"created"`
	Config    json.RawMessage `json:"config,omitempty"` // the parsed config
	// Usage is what it uses now, when its host contains it in a cgroup
	// and answered (nil otherwise).
	Usage *DomainUsage `json:"usage,omitempty"`
}

// Uptime is how long the domain has existed, as of now.
func (d Domain) Uptime(now time.Time) time.Duration {
	if d.Created.IsZero() || now.Before(d.Created) {
		return 0
	}
	return now.Sub(d.Created)
}

// DomainOutput is the tail of a domain's stdout and stderr, which the
// agent of its host keeps while it runs and for a while after it ended.
type DomainOutput struct {
	ID      uint32   `json:"id"`
	Name    string   `json:"name"`
	Host    string   `json:"host"`
	Running bool     `json:"running"`
	Exit    string   `json:"exit,omitempty"` // how it ended: "exit code 1", "killed by SIGKILL", "destroyed"
	Lines   []string `json:"lines"`          // its last lines, oldest first
}

// DomainOutput returns the last output of a domain by id or name (GET
// /v1/domains/{dom}/output). Any agent answers for a domain in the
// domain table; one that has left it is known only to its host, which
// host names ("" if unknown).
func (c *Client) DomainOutput(ctx context.Context, dom, host string) (DomainOutput, error) {
	var o DomainOutput
	p := "/v1/domains/" + url.PathEscape(dom) + "/output"
	if host != "" {
		p += "?host=" + url.QueryEscape(host)
	}
	err := c.do(ctx, http.MethodGet, p, nil, &o)
	return o, err
}

// CreateDomain starts a domain (POST /v1/domains). Any agent accepts it
// and forwards it to the host placement chooses.
func (c *Client) CreateDomain(ctx context.Context, spec DomainSpec) (Domain, error) {
	var d Domain
	err := c.do(ctx, http.MethodPost, "/v1/domains", spec, &d)
	return d, err
}

// ListDomains lists every domain of the cluster (GET /v1/domains).
func (c *Client) ListDomains(ctx context.Context) ([]Domain, error) {
	var ds []Domain
	err := c.do(ctx, http.MethodGet, "/v1/domains", nil, &ds)
	return ds, err
}

// DestroyDomain destroys a domain by id or name (DELETE
// /v1/domains/{dom}); it returns once the domain is gone.
func (c *Client) DestroyDomain(ctx context.Context, dom string) error {
	return c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(dom), nil, nil)
}
