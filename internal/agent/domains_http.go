package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"shi/api"
	"shi/internal/directory"
	"shi/internal/domain"
)

// Forwarder gives the API URL of another host's agent; ok is false if
// that host cannot be reached.
type Forwarder func(host string) (url string, ok bool)

// DomainHandler serves the domain endpoints of the API for m:
//
//	POST   /v1/domains              api.DomainSpec -> api.Domain (201)
//	GET    /v1/domains              -> []api.Domain, cluster-wide
//	GET    /v1/domains/{dom}        -> api.Domain (by id or name)
//	GET    /v1/domains/{dom}/output -> api.DomainOutput, from its host
//	DELETE /v1/domains/{dom}        -> 204 once the domain is gone
//
// A create placed on another host, or a destroy of a domain living on
// one, is forwarded to that host's agent through fwd (nil: refused).
func DomainHandler(m *domain.Manager, fwd Forwarder) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/domains", func(w http.ResponseWriter, r *http.Request) {
		var spec api.DomainSpec
		if err := json.NewDecoder(io.LimitReader(r.Body, domain.MaxConfigSize+4096)).Decode(&spec); err != nil {
			api.WriteError(w, http.StatusBadRequest, "bad request: "+err.Error())
			return
		}
		d, err := m.Create(r.Context(), domain.Spec{Config: spec.Config, Dir: spec.Dir, Node: spec.Node})
		var ee *domain.ElsewhereError
		if errors.As(err, &ee) {
			c, ferr := forwardClient(fwd, ee.Host)
			if ferr != nil {
				api.WriteError(w, http.StatusServiceUnavailable, ferr.Error())
				return
			}
			spec.Node = ee.Host
			ad, err := c.CreateDomain(r.Context(), spec)
			if err != nil {
				api.WriteError(w, http.StatusBadGateway, err.Error())
				return
			}
			api.WriteJSON(w, http.StatusCreated, ad)
			return
		}
		if err != nil {
			api.WriteError(w, statusOf(err), err.Error())
			return
		}
		api.WriteJSON(w, http.StatusCreated, ToAPI(d))
	})
	mux.HandleFunc("GET /v1/domains", func(w http.ResponseWriter, r *http.Request) {
		ds := m.List()
		out := make([]api.Domain, 0, len(ds))
		for _, d := range ds {
			out = append(out, ToAPI(d))
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/domains/{dom}", func(w http.ResponseWriter, r *http.Request) {
		d, ok := m.Lookup(r.PathValue("dom"))
		if !ok {
			api.WriteError(w, http.StatusNotFound, domain.ErrNoSuchDomain.Error()+": "+r.PathValue("dom"))
			return
		}
		api.WriteJSON(w, http.StatusOK, ToAPI(d))
	})
	mux.HandleFunc("GET /v1/domains/{dom}/output", func(w http.ResponseWriter, r *http.Request) {
		ref := r.PathValue("dom")
		if o, ok := m.Output(ref); ok {
			api.WriteJSON(w, http.StatusOK, outputToAPI(o))
			return
		}
		// Kept by the domain's host: the one the table says, or for a
		// domain that has left the table, the one the caller says.
		host := r.URL.Query().Get("host")
		if d, ok := m.Lookup(ref); ok {
			host = d.Host
		}
		if host == "" || host == m.Host() {
			api.WriteError(w, http.StatusNotFound, "no output kept for domain "+ref+" (it ended too long ago, or never ran here)")
			return
		}
		c, err := forwardClient(fwd, host)
		if err != nil {
			api.WriteError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		o, err := c.DomainOutput(r.Context(), ref, host)
		if err != nil {
			api.WriteError(w, http.StatusBadGateway, err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, o)
	})
	mux.HandleFunc("DELETE /v1/domains/{dom}", func(w http.ResponseWriter, r *http.Request) {
		ref := r.PathValue("dom")
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		err := m.Destroy(ctx, ref)
		var ee *domain.ElsewhereError
		if errors.As(err, &ee) {
			c, ferr := forwardClient(fwd, ee.Host)
			if ferr != nil {
				api.WriteError(w, http.StatusServiceUnavailable, ferr.Error())
				return
			}
			if err := c.DestroyDomain(ctx, ref); err != nil {
				api.WriteError(w, http.StatusBadGateway, err.Error())
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err != nil {
			api.WriteError(w, statusOf(err), err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func forwardClient(fwd Forwarder, host string) (*api.Client, error) {
	if fwd != nil {
		if u, ok := fwd(host); ok {
			return api.NewClient(u), nil
		}
	}
	return nil, errors.New("host " + host + " cannot be reached to forward the request")
}

func statusOf(err error) int {
	var ce *domain.ConfigError
	switch {
	case errors.As(err, &ce):
		return http.StatusBadRequest
	case errors.Is(err, domain.ErrNoSuchDomain):
		return http.StatusNotFound
	case errors.Is(err, domain.ErrNameInUse), errors.Is(err, domain.ErrNoHost):
		return http.StatusConflict
	case errors.Is(err, domain.ErrSocketUnreachable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func outputToAPI(o domain.Output) api.DomainOutput {
	lines := o.Lines
	if lines == nil {
		lines = []string{}
	}
	return api.DomainOutput{ID: o.Dom.ID, Name: o.Dom.Name, Host: o.Dom.Host, Running: o.Running, Exit: o.Exit, Lines: lines}
}

// ToAPI converts a domain-table entry for the API.
func ToAPI(d directory.Domain) api.Domain {
	return api.Domain{
		ID: d.ID, Name: d.Name, Host: d.Host, State: d.State, MemoryMiB: d.MemoryMiB,
		UUID: d.UUID, Created: time.Unix(0, d.Created).UTC(), Config: d.Config,
	}
}
