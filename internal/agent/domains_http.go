package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
//	       ?usage=all|local           with usage; local: this host's only (usage.go)
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
		// Placement trusts membership, which takes seconds to give up on
		// a host that died. A host chosen without -node that does not
		// take the forwarded request is passed over and the domain placed
		// again; the request never reached it, so nothing is created twice.
		var avoid []string
		for {
			d, err := m.Create(r.Context(), domain.Spec{Config: spec.Config, Dir: spec.Dir, Node: spec.Node, Avoid: avoid})
			var ee *domain.ElsewhereError
			if errors.As(err, &ee) {
				fs := spec
				fs.Node = ee.Host
				var ad api.Domain
				err = forward(fwd, ee.Host, func(c *api.Client) (err error) {
					ad, err = c.CreateDomain(r.Context(), fs)
					return err
				})
				var ue *unreachableError
				if errors.As(err, &ue) && spec.Node == "" {
					avoid = append(avoid, ee.Host)
					continue
				}
				if err != nil {
					api.WriteError(w, forwardStatus(err), err.Error())
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
			return
		}
	})
	mux.HandleFunc("GET /v1/domains", func(w http.ResponseWriter, r *http.Request) {
		ds := m.List()
		out := make([]api.Domain, 0, len(ds))
		for _, d := range ds {
			out = append(out, ToAPI(d))
		}
		out = listUsage(r, m, fwd, out)
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
		var o api.DomainOutput
		err := forward(fwd, host, func(c *api.Client) (err error) {
			o, err = c.DomainOutput(r.Context(), ref, host)
			return err
		})
		if err != nil {
			api.WriteError(w, forwardStatus(err), err.Error())
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
			err := forward(fwd, ee.Host, func(c *api.Client) error { return c.DestroyDomain(ctx, ref) })
			if err != nil {
				api.WriteError(w, forwardStatus(err), err.Error())
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

// unreachableError means a request for another host did not reach it:
// membership does not see the host alive, or its agent did not take the
// connection. Nothing was sent, so the request may go elsewhere.
type unreachableError struct {
	host string
	why  string
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("host %q is unreachable: %s", e.host, e.why)
}

// forwardHTTP is the client for requests forwarded to other hosts: a
// host that does not take the connection within a few seconds counts as
// unreachable. Each request dials afresh: on a connection kept from an
// earlier request, a create sent to a host that has just died is written
// into the socket and answered by a reset, which cannot be told from an
// agent that took the request and died (no reply: it may have acted),
// while a fresh dial to it is refused, which says plainly that it is
// unreachable and lets placement choose another host. Forwarded calls
// are rare (creates, destroys, outputs, usage): the dial costs little.
var forwardHTTP = &http.Client{
	Timeout:   30 * time.Second,
	Transport: forwardAuth{forwardTLS{&http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, DisableKeepAlives: true}}},
}

// forward runs call against the agent of host. It fails with
// *unreachableError if the request could not be delivered; otherwise with
// the other agent's own error, whose message is passed on as it is.
func forward(fwd Forwarder, host string, call func(*api.Client) error) error {
	if fwd == nil {
		return &unreachableError{host, "this agent does not forward requests to other hosts"}
	}
	u, ok := fwd(host)
	if !ok {
		return &unreachableError{host, "membership does not see it alive"}
	}
	c := api.NewClient(u)
	c.HTTP = forwardHTTP
	err := call(c)
	var na *api.NoAgentError
	if errors.As(err, &na) {
		// Not the caller's own agent: no hint to start one.
		return &unreachableError{host, fmt.Sprintf("its agent at %s does not answer (%v)", na.URL, na.Err)}
	}
	return err
}

// forwardStatus is the HTTP status for an error of forward.
func forwardStatus(err error) int {
	var ue *unreachableError
	if errors.As(err, &ue) {
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
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
	case errors.Is(err, domain.ErrSocketUnreachable), errors.Is(err, domain.ErrNoXenLibs):
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
