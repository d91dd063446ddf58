package agent

import (
	"context"
	"net/http"
	"sync"
	"time"

	"shi/api"
	"shi/internal/domain"
)

// usageWait bounds how long a list with usage waits for other hosts; a
// host slower than that is listed without usage.
const usageWait = 2 * time.Second

// listUsage adds usage to a domain list as the request asks:
// ?usage=local keeps this host's domains only, with their usage (what an
// agent asks of another); ?usage=all fills in every running domain's,
// asking each other host with domains for its own.
func listUsage(r *http.Request, m *domain.Manager, fwd Forwarder, ds []api.Domain) []api.Domain {
	switch r.URL.Query().Get("usage") {
	case "local":
		var out []api.Domain
		for _, d := range ds {
			if d.Host == m.Host() {
				out = append(out, withUsage(m, d))
			}
		}
		if out == nil {
			out = []api.Domain{}
		}
		return out
	case "all":
	default:
		return ds
	}
	others := map[string]bool{}
	for i, d := range ds {
		switch {
		case d.Host == m.Host():
			ds[i] = withUsage(m, d)
		case d.State == "running":
			others[d.Host] = true
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), usageWait)
	defer cancel()
	var mu sync.Mutex
	got := map[uint32]*api.DomainUsage{}
	var wg sync.WaitGroup
	for host := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var theirs []api.Domain
			err := forward(fwd, host, func(c *api.Client) (err error) {
				theirs, err = c.LocalDomains(ctx)
				return err
			})
			if err != nil {
				return // listed without usage
			}
			mu.Lock()
			defer mu.Unlock()
			for _, d := range theirs {
				if d.Host == host && d.Usage != nil {
					got[d.ID] = d.Usage
				}
			}
		}()
	}
	wg.Wait()
	for i, d := range ds {
		if u := got[d.ID]; u != nil && d.Host != m.Host() {
			ds[i].Usage = u
		}
	}
	return ds
}

func withUsage(m *domain.Manager, d api.Domain) api.Domain {
	if u, ok := m.Usage(d.ID); ok {
		d.Usage = &api.DomainUsage{MemoryBytes: u.MemoryBytes, CPUSeconds: float64(u.CPUNanos) / 1e9}
	}
	return d
}
