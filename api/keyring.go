package api

import (
	"context"
	"net/http"
)

// Keyring operations ("shi keyring"): the gossip keys of every member.
const (
	KeyringInstall = "install" // add a key everyone accepts
	KeyringUse     = "use"     // make an installed key the one everyone sends with
	KeyringRemove  = "remove"  // remove a key that is not in use
)

// KeyringRequest changes the keyring of every member.
type KeyringRequest struct {
	Op  string `json:"op"`
	Key string `json:"key"` // base64 of 16, 24 or 32 bytes
}

// KeyringNode is one member's keyring, or why it could not be read or
// changed.
type KeyringNode struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Keyring returns every live member's keyring.
func (c *Client) Keyring(ctx context.Context) ([]KeyringNode, error) {
	var out []KeyringNode
	err := c.do(ctx, http.MethodGet, "/v1/keyring", nil, &out)
	return out, err
}

// ChangeKeyring applies op with key on every live member and returns each
// one's keyring after it. If any member failed, the call fails naming
// them (the others have applied the change).
func (c *Client) ChangeKeyring(ctx context.Context, op, key string) ([]KeyringNode, error) {
	var out []KeyringNode
	err := c.do(ctx, http.MethodPost, "/v1/keyring", KeyringRequest{Op: op, Key: key}, &out)
	return out, err
}
