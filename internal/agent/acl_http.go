package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"shi/api"
	"shi/internal/directory"
)

// aclRoutes serves the token endpoints:
//
//	POST   /v1/acl/tokens        api.ACLTokenRequest -> api.ACLToken (201), with its secret
//	GET    /v1/acl/tokens        -> []api.ACLToken, without secrets
//	DELETE /v1/acl/tokens/{ref}  -> 204 (by id or name)
func (a *agent) aclRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/acl/tokens", a.createToken)
	mux.HandleFunc("GET /v1/acl/tokens", func(w http.ResponseWriter, r *http.Request) {
		if a.refuseDev(w) {
			return
		}
		out := []api.ACLToken{}
		for _, t := range a.replica.Tokens() {
			out = append(out, tokenToAPI(t))
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("DELETE /v1/acl/tokens/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if a.refuseDev(w) {
			return
		}
		cmd := directory.AuthCmd{Op: directory.AuthDelete, Token: directory.Token{ID: r.PathValue("ref")}}
		if _, ok := a.commitAuth(w, r.Context(), cmd); ok {
			a.log.Info("token deleted", "token", r.PathValue("ref"), "by", a.callerName(r.Context()))
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

func (a *agent) refuseDev(w http.ResponseWriter) bool {
	if a.cfg.Dev {
		api.WriteError(w, http.StatusBadRequest, "the dev agent takes no tokens: its API is open on loopback")
	}
	return a.cfg.Dev
}

func (a *agent) callerName(ctx context.Context) string {
	if ac, ok := principalOf(ctx); ok {
		return ac.p.name
	}
	return ""
}

func (a *agent) createToken(w http.ResponseWriter, r *http.Request) {
	if a.refuseDev(w) {
		return
	}
	var req api.ACLTokenRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	secret := newSecret(16)
	t := directory.Token{ID: newSecret(8), Name: req.Name, Hash: directory.HashSecret(secret), ReadOnly: req.ReadOnly, Created: time.Now().UnixNano()}
	if _, ok := a.commitAuth(w, r.Context(), directory.AuthCmd{Op: directory.AuthCreate, Token: t}); !ok {
		return
	}
	a.log.Info("token created", "name", t.Name, "id", t.ID, "read_only", t.ReadOnly, "by", a.callerName(r.Context()))
	out := tokenToAPI(t)
	out.Secret = secret
	api.WriteJSON(w, http.StatusCreated, out)
}

// commitAuth commits an auth command and waits until this host has
// applied it, so the token works here at once; it writes the error reply
// if it fails.
func (a *agent) commitAuth(w http.ResponseWriter, ctx context.Context, c directory.AuthCmd) (directory.Response, bool) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CommitTimeout+5*time.Second)
	defer cancel()
	idx, resp, err := a.commit.Commit(ctx, directory.AuthEntry(c))
	if err == nil {
		err = a.replica.WaitApplied(ctx, idx)
	}
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return resp, false
	}
	switch resp.Err {
	case "":
		return resp, true
	case directory.ErrTokenExists.Error():
		api.WriteError(w, http.StatusConflict, resp.Err)
	case directory.ErrNoSuchToken.Error():
		api.WriteError(w, http.StatusNotFound, resp.Err+": "+c.Token.ID)
	case directory.ErrBadToken.Error():
		api.WriteError(w, http.StatusBadRequest, "a token's name is 1 to 64 printable characters without spaces or '/'")
	default:
		api.WriteError(w, http.StatusBadRequest, resp.Err)
	}
	return resp, false
}

func tokenToAPI(t directory.Token) api.ACLToken {
	return api.ACLToken{ID: t.ID, Name: t.Name, ReadOnly: t.ReadOnly, Created: time.Unix(0, t.Created).UTC()}
}
