package api

import (
	"context"
	"net/http"
)

// DomainUsage is what a running domain uses now, as its host's cgroup
// counts it: memory charged to it (its processes' and the shareable pages
// it touched first) and CPU time since it started.
type DomainUsage struct {
	MemoryBytes uint64  `json:"memory_bytes"`
	CPUSeconds  float64 `json:"cpu_seconds"`
}

// LocalDomains lists the domains of the agent's own host with what each
// uses (GET /v1/domains?usage=local); a domain that runs uncontained has
// no Usage. An agent building the cluster-wide list asks each host this.
func (c *Client) LocalDomains(ctx context.Context) ([]Domain, error) {
	var ds []Domain
	err := c.do(ctx, http.MethodGet, "/v1/domains?usage=local", nil, &ds)
	return ds, err
}

// ListDomainsUsage lists every domain of the cluster as ListDomains
// does, with what each running domain uses, asked of its host (GET
// /v1/domains?usage=all): slower, as every host with domains is asked.
func (c *Client) ListDomainsUsage(ctx context.Context) ([]Domain, error) {
	var ds []Domain
	err := c.do(ctx, http.MethodGet, "/v1/domains?usage=all", nil, &ds)
	return ds, err
}
