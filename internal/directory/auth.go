package directory

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// The API's tokens live in the directory, so that every host accepts the
// same ones. Only a hash of each token's secret is kept: the secret is
// shown once, to whoever created it. Besides the operators' tokens the
// table keeps the agents' own credential, with which an agent forwards a
// request it has already authorized (or a change to the leader); it is
// kept in the clear, because every agent must present it.

// Token is an API token as the directory keeps it.
type Token struct {
	// ID names the token in lists and deletes; it is not a credential.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Hash is SHA-256 of the secret, hex.
	Hash     string `json:"hash"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Created  int64  `json:"created"` // unix nanoseconds, stamped by the proposer
}

// Auth table operations.
const (
	// AuthBootstrap sets the agents' credential and adds Token (if it has
	// a hash), once per cluster; later it fails with ErrBootstrapped.
	AuthBootstrap = "bootstrap"
	// AuthCreate adds Token. With Ensure, a token of the same hash that
	// exists already is success (an -api-token-file given to every agent).
	AuthCreate = "create"
	// AuthDelete removes the token whose ID or name is Token.ID.
	AuthDelete = "delete"
)

// AuthCmd is an auth-table command of the log.
type AuthCmd struct {
	Op     string `json:"op"`
	Token  Token  `json:"token"`
	Ensure bool   `json:"ensure,omitempty"`
	// AgentSecret is the agents' credential (bootstrap only).
	AgentSecret string `json:"agent_secret,omitempty"`
}

// Errors of auth commands (replicated, so deterministic).
var (
	ErrBootstrapped = errors.New("the API's tokens are bootstrapped already")
	ErrBadToken     = errors.New("malformed token command")
	ErrTokenExists  = errors.New("a token with that name exists")
	ErrNoSuchToken  = errors.New("no such token")
)

// HashSecret is the hash the directory keeps of a token's secret.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte("shi-token\x00" + secret))
	return hex.EncodeToString(h[:])
}

// authTable is immutable once built, like domainTable.
type authTable struct {
	agentSecret string
	byID        map[string]*Token
	byHash      map[string]*Token
}

func newAuthTable() *authTable {
	return &authTable{byID: map[string]*Token{}, byHash: map[string]*Token{}}
}

func (t *authTable) clone() *authTable {
	c := &authTable{agentSecret: t.agentSecret, byID: make(map[string]*Token, len(t.byID)+1), byHash: make(map[string]*Token, len(t.byHash)+1)}
	for k, v := range t.byID {
		c.byID[k] = v
		c.byHash[v.Hash] = v
	}
	return c
}

func (t *authTable) add(tok Token) {
	nt := tok
	t.byID[nt.ID] = &nt
	t.byHash[nt.Hash] = &nt
}

func (t *authTable) list() []Token {
	out := make([]Token, 0, len(t.byID))
	for _, v := range t.byID {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Created != out[j].Created {
			return out[i].Created < out[j].Created
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// find returns the token whose ID or name is ref.
func (t *authTable) find(ref string) *Token {
	if tok := t.byID[ref]; tok != nil {
		return tok
	}
	for _, tok := range t.byID {
		if tok.Name == ref {
			return tok
		}
	}
	return nil
}

func validToken(tok Token) bool {
	h, err := hex.DecodeString(tok.Hash)
	return validName(tok.Name) && tok.ID != "" && len(tok.ID) <= 64 && err == nil && len(h) == sha256.Size
}

func (f *FSM) applyAuth(c AuthCmd) Response {
	var r Response
	fail := func(err error) Response { r.Err = err.Error(); return r }
	switch c.Op {
	case AuthBootstrap:
		if f.auth.agentSecret != "" {
			return fail(ErrBootstrapped)
		}
		if c.AgentSecret == "" || (c.Token.Hash != "" && !validToken(c.Token)) {
			return fail(ErrBadToken)
		}
		t := f.auth.clone()
		t.agentSecret = c.AgentSecret
		if c.Token.Hash != "" {
			t.add(c.Token)
		}
		f.auth = t
	case AuthCreate:
		if !validToken(c.Token) {
			return fail(ErrBadToken)
		}
		if old := f.auth.byHash[c.Token.Hash]; old != nil {
			if c.Ensure {
				return r
			}
			return fail(ErrTokenExists)
		}
		if f.auth.find(c.Token.Name) != nil || f.auth.byID[c.Token.ID] != nil {
			return fail(ErrTokenExists)
		}
		t := f.auth.clone()
		t.add(c.Token)
		f.auth = t
	case AuthDelete:
		old := f.auth.find(c.Token.ID)
		if old == nil {
			return fail(ErrNoSuchToken)
		}
		t := f.auth.clone()
		delete(t.byID, old.ID)
		delete(t.byHash, old.Hash)
		f.auth = t
	default:
		return fail(ErrUnknownOp)
	}
	return r
}

// AuthEntry encodes an auth command as a log entry. Its type is
// ignorable: a replica too old to know tokens skips it, and so refuses
// every token (it fails closed).
func AuthEntry(c AuthCmd) []byte {
	b, _ := json.Marshal(c)
	return append([]byte{entryAuth | flagIgnorable}, b...)
}

func decodeAuthCmd(b []byte) (AuthCmd, error) {
	var c AuthCmd
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	return c, nil
}

// TokenBySecret returns the token whose secret is secret.
func (f *FSM) TokenBySecret(secret string) (Token, bool) {
	tok := f.auth.byHash[HashSecret(secret)]
	if tok == nil {
		return Token{}, false
	}
	return *tok, true
}

// IsAgentSecret reports whether secret is the agents' credential.
func (f *FSM) IsAgentSecret(secret string) bool {
	s := f.auth.agentSecret
	return s != "" && subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1
}

// AgentSecret returns the agents' credential ("" before bootstrap).
func (f *FSM) AgentSecret() string { return f.auth.agentSecret }

// Tokens lists the tokens, oldest first.
func (f *FSM) Tokens() []Token { return f.auth.list() }

// TokenBySecret returns the token whose secret is secret.
func (r *Replica) TokenBySecret(secret string) (Token, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.TokenBySecret(secret)
}

// IsAgentSecret reports whether secret is the agents' credential.
func (r *Replica) IsAgentSecret(secret string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.IsAgentSecret(secret)
}

// AgentSecret returns the agents' credential ("" before bootstrap).
func (r *Replica) AgentSecret() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.AgentSecret()
}

// Tokens lists the tokens.
func (r *Replica) Tokens() []Token {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fsm.Tokens()
}

// authJSON is the auth table in a snapshot.
type authJSON struct {
	AgentSecret string  `json:"agent_secret,omitempty"`
	Tokens      []Token `json:"tokens,omitempty"`
}

func (t *authTable) marshal() ([]byte, error) {
	return json.Marshal(authJSON{AgentSecret: t.agentSecret, Tokens: t.list()})
}

func unmarshalAuth(b []byte) (*authTable, error) {
	var a authJSON
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	t := newAuthTable()
	t.agentSecret = a.AgentSecret
	for _, tok := range a.Tokens {
		if !validToken(tok) || t.byID[tok.ID] != nil || t.byHash[tok.Hash] != nil {
			return nil, ErrBadToken
		}
		t.add(tok)
	}
	return t, nil
}
