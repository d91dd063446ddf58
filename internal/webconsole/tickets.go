package webconsole

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"shi/api"
	"shi/internal/ticket"
)

// Tickets serves POST /v1/console/tickets and checks the tickets that
// come back on the console endpoint.
type Tickets struct {
	// Store keeps the outstanding tickets.
	Store *ticket.Store
	// Lookup finds a domain by name or id in the domain table.
	Lookup func(ref string) (ticket.Domain, bool)
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

func (t *Tickets) now() time.Time {
	if t.Now == nil {
		return time.Now()
	}
	return t.Now()
}

// ServeIssue implements POST /v1/console/tickets:
// api.ConsoleTicketRequest -> api.ConsoleTicket (201).
func (t *Tickets) ServeIssue(w http.ResponseWriter, r *http.Request) {
	// JSON only: another site's page can post a form or text/plain
	// without asking, but not application/json, which needs a CORS
	// preflight this agent never grants.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		api.WriteError(w, http.StatusUnsupportedMediaType, "a console ticket request is JSON (Content-Type: application/json)")
		return
	}
	var req api.ConsoleTicketRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	if req.Domain == "" {
		api.WriteError(w, http.StatusBadRequest, `bad request: no "domain"`)
		return
	}
	d, ok := t.Lookup(req.Domain)
	if !ok {
		api.WriteError(w, http.StatusNotFound, "no such domain: "+req.Domain)
		return
	}
	tk, exp, err := t.Store.Issue(d, t.now())
	if errors.Is(err, ticket.ErrFull) {
		api.WriteError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusCreated, api.ConsoleTicket{Ticket: tk, Expires: exp.UTC()})
}

// Gate wraps the API's handler: a console request (GET
// /v1/domains/{dom}/console) that carries a ticket is let through only if
// the ticket is valid for that domain (else 401), and without the ticket,
// which is used up and means nothing to another agent the endpoint may
// proxy to. Requests without a ticket, and every other path, pass as
// they are: the ticket is how a browser brings credentials, not a second
// lock on the API.
func (t *Tickets) Gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dom, ok := consoleDomain(r.URL.EscapedPath())
		q := r.URL.Query()
		if !ok || !q.Has("ticket") {
			next.ServeHTTP(w, r)
			return
		}
		d, err := t.Store.Redeem(q.Get("ticket"), t.now())
		if err == nil && !d.Matches(dom) {
			err = fmt.Errorf("ticket is for domain %s (id %d), not %s", d.Name, d.ID, dom)
		}
		if err != nil {
			api.WriteError(w, http.StatusUnauthorized, "console: "+err.Error())
			return
		}
		q.Del("ticket")
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		r2.RequestURI = r2.URL.RequestURI()
		next.ServeHTTP(w, r2)
	})
}

// consoleDomain returns {dom} of an escaped path /v1/domains/{dom}/console,
// split into segments before unescaping as http.ServeMux does, so that
// the gate sees every path the console endpoint's route matches
// ("%2F" is one segment).
func consoleDomain(escaped string) (string, bool) {
	rest, ok := strings.CutPrefix(escaped, "/v1/domains/")
	if !ok {
		return "", false
	}
	seg, ok := strings.CutSuffix(rest, "/console")
	if !ok || seg == "" || strings.Contains(seg, "/") {
		return "", false
	}
	dom, err := url.PathUnescape(seg)
	if err != nil {
		return "", false
	}
	return dom, true
}
