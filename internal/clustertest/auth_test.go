package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/directory"
	"shi/internal/nstest"
)

// strangerHTTP is an HTTP client whose connections come from s.
func strangerHTTP(s *nstest.Host) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := s.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// TestAPIStranger: a machine on the cluster's network that is no member
// gets 401 from every agent's API without a token or with a wrong one,
// 403 with a read-only token for any change, and may not write the
// directory's log even with the management token; the cluster's domains
// and tokens are as they were. The management token's forwarded create
// and destroy work, and the host that ran them logs the token's name.
func TestAPIStranger(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 2, BootstrapExpect: 1, Strangers: 1})
	h0, h1 := c.Host(0), c.Host(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ro, err := h0.API.CreateToken(ctx, api.ACLTokenRequest{Name: "watcher", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	// A domain the stranger will try to destroy.
	keep := createOn(t, ctx, h1, sleeperConfig("keep", 4))
	before := clusterState(t, ctx, h0)

	hc := strangerHTTP(c.Stranger(0))
	try := func(h *Host, token, method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, h.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("stranger: %s %s%s: %v", method, h.URL, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	intruder := `{"config": "name = \"intruder\"\ncmd = \"/bin/sh\"\nargs = [\"-c\", \"touch /tmp/shi-intruder\"]\n"}`
	commit := string(directory.DomainEntry(directory.DomainCmd{Op: directory.DomCreate, Domain: directory.Domain{Name: "intruder", Host: h0.Name}}))
	changes := []struct{ method, path, body string }{
		{"POST", "/v1/domains", intruder},
		{"DELETE", "/v1/domains/keep", ""},
		{"POST", "/v1/acl/tokens", `{"name": "mine"}`},
		{"DELETE", "/v1/acl/tokens/watcher", ""},
		{"POST", api.ConsoleTicketsPath, `{"domain": "keep"}`},
		{"GET", "/v1/domains/keep/console", ""},
		{"POST", "/v1/internal/commit", commit},
	}
	reads := []string{"/v1/nodes", "/v1/info", "/v1/domains", "/v1/domains/keep", "/metrics", "/v1/acl/tokens"}
	for _, h := range []*Host{h0, h1} {
		for _, tok := range []string{"", "0123456789abcdef0123456789abcdef", c.Token + "x"} {
			for _, p := range reads {
				if code := try(h, tok, "GET", p, ""); code != http.StatusUnauthorized {
					t.Errorf("%s, token %q: GET %s: %d, want 401", h.Name, tok, p, code)
				}
			}
			for _, ch := range changes {
				if code := try(h, tok, ch.method, ch.path, ch.body); code != http.StatusUnauthorized {
					t.Errorf("%s, token %q: %s %s: %d, want 401", h.Name, tok, ch.method, ch.path, code)
				}
			}
		}
		for _, p := range reads[:5] {
			if code := try(h, ro.Secret, "GET", p, ""); code != http.StatusOK {
				t.Errorf("%s, read-only token: GET %s: %d, want 200", h.Name, p, code)
			}
		}
		for _, ch := range changes {
			if code := try(h, ro.Secret, ch.method, ch.path, ch.body); code != http.StatusForbidden {
				t.Errorf("%s, read-only token: %s %s: %d, want 403", h.Name, ch.method, ch.path, code)
			}
		}
		// The log is the agents' alone.
		if code := try(h, c.Token, "POST", "/v1/internal/commit", commit); code != http.StatusForbidden {
			t.Errorf("%s, management token: commit: %d, want 403", h.Name, code)
		}
	}
	if after := clusterState(t, ctx, h1); !slices.Equal(after, before) {
		t.Errorf("the stranger changed the cluster:\nbefore %q\nafter  %q", before, after)
	}
	if _, err := os.Stat("/tmp/shi-intruder"); err == nil {
		t.Error("the intruder's domain ran")
	}

	// The management token, from the stranger: a create through h0
	// placed on h1 is forwarded, and h1 logs who asked.
	mc := api.NewClient(h0.URL)
	mc.HTTP, mc.Token = hc, c.Token
	mc.HTTP.Timeout = time.Minute
	d, err := mc.CreateDomain(ctx, api.DomainSpec{Config: sleeperConfig("fwd", 4), Node: h1.Name})
	if err != nil || d.Host != h1.Name {
		t.Fatalf("forwarded create: %+v %v", d, err)
	}
	if err := mc.DestroyDomain(ctx, "fwd"); err != nil {
		t.Fatalf("forwarded destroy: %v", err)
	}
	if err := mc.DestroyDomain(ctx, keep.Name); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	out := h1.Proc().Output()
	for _, want := range []string{`msg="domain create" token="management (forwarded)" status=201 domain=fwd`, `msg="domain destroy" token="management (forwarded)" status=204 domain=fwd`} {
		if !strings.Contains(out, want) {
			t.Errorf("h1's log has no %s", want)
		}
	}
	if !strings.Contains(h0.Proc().Output(), `msg="domain create" token=management status=201 domain=fwd`) {
		t.Error("h0's log does not say who created fwd")
	}
}

// clusterState is what a stranger must not change: the domains and the
// tokens, as h's agent lists them.
func clusterState(t *testing.T, ctx context.Context, h *Host) []string {
	t.Helper()
	ds, err := h.API.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := h.API.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Name+"@"+d.Host+":"+d.State)
	}
	for _, tk := range ts {
		b, _ := json.Marshal(tk)
		out = append(out, string(b))
	}
	return out
}

// TestTokenFromAnyHost: a token made through one host works at once on
// every host (a host that has not applied it yet catches up before it
// refuses), and a deleted one nowhere once the hosts have applied the
// delete; root on a host uses the CLI
// through the agent's socket without a token.
func TestTokenFromAnyHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	c := Start(t, Options{Hosts: 3})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, h := range c.Hosts() {
		tk, err := h.API.CreateToken(ctx, api.ACLTokenRequest{Name: "t" + h.Name})
		if err != nil {
			t.Fatal(err)
		}
		other := c.Host((i + 1) % 3)
		cl := api.NewClient(other.URL)
		cl.HTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: other.dial}}
		cl.Token = tk.Secret
		if _, err := cl.Nodes(ctx); err != nil {
			t.Fatalf("token made on %s, used at once on %s: %v", h.Name, other.Name, err)
		}
		if err := h.API.DeleteToken(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		// Refused everywhere once applied there: a replica may lag the
		// delete by a moment.
		var lastErr error
		if err := Poll(ctx, 10*time.Millisecond, func() bool {
			_, lastErr = cl.Nodes(ctx)
			return lastErr != nil && strings.Contains(lastErr.Error(), "unknown token")
		}); err != nil {
			t.Fatalf("deleted token on %s: %v", other.Name, lastErr)
		}
	}
	// The CLI as root on h2 without SHI_AGENT or a token: the socket.
	h := c.Host(2)
	cmd := c.NS.Host(2).Command(ctx, "env", "-u", api.EnvToken, "-u", api.EnvAgent, api.EnvXenstore+"="+h.Socket, c.Bin, "acl", "token", "create", "-name", "from-socket", "-read-only")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "read-only") {
		t.Fatalf("shi acl token create on the socket: %v\n%s", err, out.String())
	}
	cmd = c.NS.Host(0).Command(ctx, append([]string{"env"}, append(h.Env(), c.Bin, "acl", "token", "list")...)...)
	out.Reset()
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "from-socket") || !strings.Contains(out.String(), "management") {
		t.Fatalf("shi acl token list with SHI_TOKEN: %v\n%s", err, out.String())
	}
	t.Logf("shi acl token list:\n%s", out.String())
}
