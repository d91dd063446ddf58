package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// ACLToken describes an API token. Secret is set only in the reply to
// the create that made it: the directory keeps a hash.
type ACLToken struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	ReadOnly bool      `json:"read_only"`
	Created  time.Time `json:"created"`
	Secret   string    `json:"secret,omitempty"`
}

// ACLTokenRequest is the body of POST /v1/acl/tokens.
type ACLTokenRequest struct {
	Name     string `json:"name"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// CreateToken makes a token; its secret is in the reply, and only there.
func (c *Client) CreateToken(ctx context.Context, req ACLTokenRequest) (ACLToken, error) {
	var t ACLToken
	err := c.do(ctx, http.MethodPost, "/v1/acl/tokens", req, &t)
	return t, err
}

// Tokens lists the tokens (without secrets).
func (c *Client) Tokens(ctx context.Context) ([]ACLToken, error) {
	var ts []ACLToken
	err := c.do(ctx, http.MethodGet, "/v1/acl/tokens", nil, &ts)
	return ts, err
}

// DeleteToken deletes the token with that id or name.
func (c *Client) DeleteToken(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/v1/acl/tokens/"+url.PathEscape(ref), nil, nil)
}
