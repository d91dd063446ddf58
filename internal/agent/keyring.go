package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"shi/api"
	"shi/internal/membership"
)

// The gossip keyring ("shi keyring"): memberlist's keyring on every
// member, changed through the API. The agent a client asks sends the
// change to every live member's agent (there is no Serf-style query), so
// a rotation is: install everywhere, use everywhere, remove the old key
// everywhere; at each step every member still reads what every other
// sends. Each agent keeps its keyring in its data dir, which wins over
// -encrypt at restart, so a host restarted after a rotation still gets in.

// keyringFile is where an agent keeps its keyring.
func (a *agent) keyringFile() string { return filepath.Join(a.cfg.DataDir, "keyring.json") }

// gossipKeys returns the keys membership starts with: the saved keyring
// if there is one, else -encrypt's key.
func (a *agent) gossipKeys() (primary []byte, others [][]byte, err error) {
	b, err := os.ReadFile(a.keyringFile())
	if errors.Is(err, os.ErrNotExist) || len(a.cfg.EncryptKey) == 0 {
		return a.cfg.EncryptKey, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var kr membership.Keyring
	if err := json.Unmarshal(b, &kr); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", a.keyringFile(), err)
	}
	if primary, err = membership.ParseKey(kr.Primary); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", a.keyringFile(), err)
	}
	for _, s := range kr.Keys {
		k, err := membership.ParseKey(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", a.keyringFile(), err)
		}
		others = append(others, k)
	}
	return primary, others, nil
}

// saveKeyring writes the keyring after a change, atomically.
func (a *agent) saveKeyring(kr membership.Keyring) error {
	b, _ := json.Marshal(kr)
	tmp := a.keyringFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.keyringFile())
}

// keyringMu serialises changes of this agent's keyring and its file.
var keyringMu sync.Mutex

// parseKeyringRequest decodes a keyring change from the network.
func parseKeyringRequest(b []byte) (api.KeyringRequest, error) {
	var req api.KeyringRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return req, fmt.Errorf("bad request: %v", err)
	}
	switch req.Op {
	case api.KeyringInstall, api.KeyringUse, api.KeyringRemove:
	default:
		return req, fmt.Errorf("bad request: keyring op %q (want install, use or remove)", req.Op)
	}
	if _, err := membership.ParseKey(req.Key); err != nil {
		return req, fmt.Errorf("bad request: %v", err)
	}
	return req, nil
}

// changeLocal applies a change to this member's keyring and saves it.
func (a *agent) changeLocal(req api.KeyringRequest) (membership.Keyring, error) {
	keyringMu.Lock()
	defer keyringMu.Unlock()
	var err error
	switch req.Op {
	case api.KeyringInstall:
		err = a.members.InstallKey(req.Key)
	case api.KeyringUse:
		err = a.members.UseKey(req.Key)
	case api.KeyringRemove:
		err = a.members.RemoveKey(req.Key)
	}
	if err != nil {
		return membership.Keyring{}, err
	}
	kr, err := a.members.Keyring()
	if err == nil {
		err = a.saveKeyring(kr)
	}
	return kr, err
}

func (a *agent) keyringRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/internal/keyring", a.member(func(w http.ResponseWriter, r *http.Request) {
		kr, err := a.members.Keyring()
		if err != nil {
			api.WriteError(w, http.StatusConflict, err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, api.KeyringNode{Node: a.cfg.Name, Primary: kr.Primary, Keys: kr.Keys})
	}))
	mux.HandleFunc("POST /v1/internal/keyring", a.member(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		req, err := parseKeyringRequest(b)
		if err != nil {
			api.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		kr, err := a.changeLocal(req)
		if err != nil {
			api.WriteError(w, http.StatusConflict, err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, api.KeyringNode{Node: a.cfg.Name, Primary: kr.Primary, Keys: kr.Keys})
	}))
	mux.HandleFunc("GET /v1/keyring", func(w http.ResponseWriter, r *http.Request) {
		a.keyringAll(w, r, http.MethodGet, nil)
	})
	mux.HandleFunc("POST /v1/keyring", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		if _, err := parseKeyringRequest(b); err != nil {
			api.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		a.keyringAll(w, r, http.MethodPost, b)
	})
}

// keyringAll sends a keyring request to every live member's agent, this
// one included, at once, and answers with each one's keyring.
func (a *agent) keyringAll(w http.ResponseWriter, r *http.Request, method string, body []byte) {
	if _, err := a.members.Keyring(); err != nil {
		api.WriteError(w, http.StatusConflict, err.Error())
		return
	}
	hc := a.peerHTTP()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var (
		mu  sync.Mutex
		out []api.KeyringNode
		wg  sync.WaitGroup
	)
	for _, m := range a.members.Members() {
		if m.State != membership.StateAlive || m.Meta.APIURL == "" {
			continue
		}
		wg.Go(func() {
			n := a.keyringOn(ctx, hc, m.Name, m.Meta.APIURL, method, body)
			mu.Lock()
			out = append(out, n)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(x, y api.KeyringNode) int { return strings.Compare(x.Node, y.Node) })
	var failed []string
	for _, n := range out {
		if n.Error != "" {
			failed = append(failed, n.Node+": "+n.Error)
		}
	}
	if len(failed) > 0 {
		api.WriteError(w, http.StatusBadGateway, "keyring: "+strings.Join(failed, "; "))
		return
	}
	if method == http.MethodPost {
		var req api.KeyringRequest
		json.Unmarshal(body, &req)
		a.log.Info("gossip keyring changed on every member", "op", req.Op, "members", len(out))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// keyringOn runs a keyring request on one member.
func (a *agent) keyringOn(ctx context.Context, hc *http.Client, name, url, method string, body []byte) api.KeyringNode {
	n := api.KeyringNode{Node: name}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(url, "/")+"/v1/internal/keyring", bytes.NewReader(body))
	if err != nil {
		n.Error = err.Error()
		return n
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		n.Error = err.Error()
		return n
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		n.Error = e.Error
		return n
	}
	if err := json.Unmarshal(b, &n); err != nil {
		n.Error = err.Error()
	}
	n.Node = name
	return n
}
