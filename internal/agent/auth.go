package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	pathpkg "path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"shi/api"
	"shi/internal/directory"
	"shi/internal/webconsole"
)

// API authentication (docs/agent.md, "Tokens"). Outside -dev every
// request carries a token from the directory's auth table; requests on the
// local socket come from root on this host and need none. Another agent
// forwarding a request it has authorized already (a create placed here,
// a destroy of a domain living here, a console) presents the agents' own
// credential, which the directory keeps beside the tokens: it is never
// weaker than the caller's token, and the forwarding agent has checked
// the caller's right to that very request. The caller's token name rides
// along in callerHeader, for the log.

// level is what a request needs.
type level int

const (
	levelPublic level = iota // the web console's page: no data
	levelRead                // any token
	levelWrite               // a management token
	levelAgent               // the agents' credential only
)

// callerHeader names, on a forwarded request, the token the first agent
// took it with. Believed only from an agent.
const callerHeader = "X-Shi-Caller"

// access is the level a request needs. Reads of the cluster's state are
// open to read-only tokens; everything that changes something, attaches
// to a console or manages tokens needs a management token.
func access(method, p string) level {
	// Judge the path the router will serve: it redirects a path with
	// "..", "." or "//" to its clean form rather than serve it.
	path := pathpkg.Clean(p)
	if strings.HasSuffix(p, "/") && path != "/" {
		path += "/"
	}
	switch {
	case path == "/" || strings.HasPrefix(path, webconsole.PagePath):
		return levelPublic
	case path == "/v1/internal/faults":
		return levelWrite // the tests' fault hook, set by the tests' clients
	case strings.HasPrefix(path, "/v1/internal/"):
		return levelAgent // what agents ask of each other: commits, read indexes, keyrings
	case strings.HasPrefix(path, "/debug/"),
		strings.HasPrefix(path, "/v1/acl/"), path == "/v1/acl":
		return levelWrite
	}
	if method != http.MethodGet && method != http.MethodHead {
		return levelWrite
	}
	switch {
	case path == "/v1/agent/self", path == "/v1/nodes", path == "/v1/info", path == "/metrics":
		return levelRead
	case path == "/v1/domains":
		return levelRead
	case strings.HasPrefix(path, "/v1/domains/"):
		if strings.HasSuffix(path, "/console") {
			return levelWrite // a console takes input
		}
		return levelRead
	}
	return levelWrite
}

// principal is who a request comes from.
type principal struct {
	name     string // the token's name, or what else vouches for the request
	readOnly bool
	agent    bool // another agent, or root on the local socket
}

type principalKey struct{}

// authContext is what a request's context carries past the gate: who
// asked, and the agent whose credential forwards it.
type authContext struct {
	p principal
	a *agent
}

func withPrincipal(ctx context.Context, a *agent, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, authContext{p, a})
}

func principalOf(ctx context.Context) (authContext, bool) {
	ac, ok := ctx.Value(principalKey{}).(authContext)
	return ac, ok
}

// socketKey marks requests that came in on the local socket.
type socketKey struct{}

// authenticate gates the API.
func (a *agent) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Dev {
			next.ServeHTTP(w, r)
			return
		}
		if who, ok := r.Context().Value(socketKey{}).(string); ok {
			a.serveAs(w, r, next, principal{name: who, agent: true})
			return
		}
		need := access(r.Method, r.URL.Path)
		if need == levelPublic {
			next.ServeHTTP(w, r)
			return
		}
		// A console request with a ticket: the ticket gate (inside) checks
		// it; tickets are issued only to management tokens.
		if r.Method == http.MethodGet && isConsolePath(r.URL.EscapedPath()) && r.URL.Query().Has("ticket") {
			a.serveAs(w, r, next, principal{name: "console ticket"})
			return
		}
		secret, ok := api.BearerToken(r.Header)
		if !ok {
			api.WriteError(w, http.StatusUnauthorized, a.noTokenHint())
			return
		}
		p, ok := a.principalFor(r.Context(), secret)
		if ok && p.agent && r.Header.Get(callerHeader) != "" {
			p.name = r.Header.Get(callerHeader) + " (forwarded)"
		}
		switch {
		case !ok:
			api.WriteError(w, http.StatusUnauthorized, "unknown token: this cluster has no such token (see 'shi acl token list')")
		case need == levelAgent && !p.agent:
			api.WriteError(w, http.StatusForbidden, "only agents may use "+r.URL.Path)
		case need == levelWrite && p.readOnly:
			api.WriteError(w, http.StatusForbidden, fmt.Sprintf("token %q is read-only: %s %s needs a management token", p.name, r.Method, r.URL.Path))
		default:
			a.serveAs(w, r, next, p)
		}
	})
}

// isConsolePath reports whether an escaped path is /v1/domains/{dom}/console
// as the ticket gate and the router see it (segments split before they
// are unescaped).
func isConsolePath(escaped string) bool {
	rest, ok := strings.CutPrefix(escaped, "/v1/domains/")
	if !ok {
		return false
	}
	seg, ok := strings.CutSuffix(rest, "/console")
	return ok && seg != "" && !strings.Contains(seg, "/")
}

func (a *agent) noTokenHint() string {
	msg := "this agent's API needs a token: set " + api.EnvToken + " or pass -token"
	if a.cfg.APISocket != "" {
		msg += " (root on this host may use the socket " + a.cfg.APISocket + " instead)"
	}
	return msg
}

// principalFor finds who holds secret. A token made through another
// host a moment ago may not have reached this replica yet: an unknown
// secret waits for the replica to catch up with the leader once.
func (a *agent) principalFor(ctx context.Context, secret string) (principal, bool) {
	lookup := func() (principal, bool) {
		if a.replica.IsAgentSecret(secret) {
			return principal{name: "agent", agent: true}, true
		}
		if t, ok := a.replica.TokenBySecret(secret); ok {
			return principal{name: t.Name, readOnly: t.ReadOnly}, true
		}
		return principal{}, false
	}
	if p, ok := lookup(); ok || a.cluster == nil {
		return p, ok
	}
	if a.catchUp(ctx) != nil {
		return principal{}, false
	}
	return lookup()
}

// catchUp waits until this replica has applied what the leader had
// committed when it was called. Callers share read indexes, one in
// flight at a time per host, so a flood of bad tokens costs the leader
// one request at a time from this host; a caller that joins a read index
// asked before it arrived waits for the next one.
func (a *agent) catchUp(ctx context.Context) error {
	arrived := time.Now()
	for {
		c := a.auth.round(a)
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.start.Before(arrived) {
			continue
		}
		if c.err != nil {
			return c.err
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return a.replica.WaitApplied(ctx, c.idx)
	}
}

// authState is the agent's: the read index in flight for catchUp.
type authState struct {
	mu       sync.Mutex
	catching *catchUp
}

// round returns the read index in flight, starting one if none is.
func (s *authState) round(a *agent) *catchUp {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.catching != nil {
		return s.catching
	}
	c := &catchUp{start: time.Now(), done: make(chan struct{})}
	s.catching = c
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.idx, c.err = a.cluster.ReadIndex(ctx)
		s.mu.Lock()
		s.catching = nil
		s.mu.Unlock()
		close(c.done)
	}()
	return c
}

// catchUp is one read index shared by the requests that wait for it.
type catchUp struct {
	start time.Time
	done  chan struct{}
	idx   uint64
	err   error
}

// serveAs serves a request for p, logging domain creates and destroys
// with who asked.
func (a *agent) serveAs(w http.ResponseWriter, r *http.Request, next http.Handler, p principal) {
	r = r.WithContext(withPrincipal(r.Context(), a, p))
	op := ""
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/domains":
		op = "create"
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/domains/") && strings.Count(r.URL.Path, "/") == 3:
		op = "destroy"
	}
	if op == "" {
		next.ServeHTTP(w, r)
		return
	}
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	next.ServeHTTP(rec, r)
	args := []any{"token", p.name, "status", rec.code}
	if op == "create" {
		var d api.Domain
		if rec.code == http.StatusCreated && json.Unmarshal(rec.body.Bytes(), &d) == nil {
			args = append(args, "domain", d.Name, "domid", d.ID, "host", d.Host)
		}
	} else {
		args = append(args, "domain", strings.TrimPrefix(r.URL.Path, "/v1/domains/"))
	}
	a.log.Info("domain "+op, args...)
}

// recorder keeps a reply's status and the start of its body.
type recorder struct {
	http.ResponseWriter
	code int
	body bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.body.Len() < 16<<10 {
		r.body.Write(b[:min(len(b), 16<<10-r.body.Len())])
	}
	return r.ResponseWriter.Write(b)
}

// forwardAuth sends the agents' credential with a request forwarded on
// behalf of an authenticated caller (the request's context says who).
type forwardAuth struct{ next http.RoundTripper }

func (f forwardAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	ac, ok := principalOf(req.Context())
	if !ok || ac.a.cfg.Dev {
		return f.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	ac.a.forwardHeader(req.Header, ac.p)
	return f.next.RoundTrip(req)
}

// forwardHeader adds the agents' credential and the caller's name.
func (a *agent) forwardHeader(h http.Header, p principal) {
	if s := a.replica.AgentSecret(); s != "" {
		h.Set("Authorization", "Bearer "+s)
	}
	h.Set(callerHeader, p.name)
}

// consoleHeader is the header of a console proxied to another host.
func (a *agent) consoleHeader(ctx context.Context) http.Header {
	h := http.Header{}
	if ac, ok := principalOf(ctx); ok && !a.cfg.Dev {
		a.forwardHeader(h, ac.p)
	}
	return h
}

// agentAuth sends the agents' credential with the directory's forwarded
// commits and read indexes, waiting until this replica knows it (a host
// that has just joined learns it from the log).
type agentAuth struct {
	a    *agent
	next http.RoundTripper
}

func (t agentAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	s := t.a.replica.AgentSecret()
	for s == "" {
		ctx, cancel := context.WithTimeout(req.Context(), 200*time.Millisecond)
		t.a.replica.WaitApplied(ctx, t.a.replica.Applied()+1)
		cancel()
		if err := req.Context().Err(); err != nil {
			// Not sent: the committer may try another leader.
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("the agents' credential is not known here yet: %w", err)}
		}
		s = t.a.replica.AgentSecret()
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+s)
	return t.next.RoundTrip(req)
}

// newSecret is a fresh token secret or id: n random bytes, hex.
func newSecret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// authLoop sets up the cluster's tokens: the first leader bootstraps
// the auth table (the agents' credential and a management token: this
// agent's -api-token-file's, else a new one printed once), and an agent
// given -api-token-file makes sure its token exists. Then it ends.
func (a *agent) authLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	ensured := a.cfg.APIToken == ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.replica.AgentSecret() == "" {
			if a.node.Ready() {
				a.bootstrapAuth(ctx)
			}
			continue
		}
		if !ensured {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, resp, err := a.commit.Commit(cctx, directory.AuthEntry(directory.AuthCmd{Op: directory.AuthCreate, Ensure: true, Token: fileToken(a.cfg.APIToken)}))
			cancel()
			switch {
			case err != nil:
				a.log.Warn("adding the -api-token-file token; trying again", "err", err)
				continue
			case resp.Err != "":
				a.log.Warn("the -api-token-file token was not added", "err", resp.Err)
			}
			ensured = true
		}
		return
	}
}

// fileToken is the management token of -api-token-file.
func fileToken(secret string) directory.Token {
	h := directory.HashSecret(secret)
	return directory.Token{ID: h[:16], Name: "management", Hash: h, Created: time.Now().UnixNano()}
}

func (a *agent) bootstrapAuth(ctx context.Context) {
	secret, printed := a.cfg.APIToken, false
	if secret == "" {
		secret, printed = newSecret(16), true
	}
	tok := fileToken(secret)
	if printed {
		tok.Name = "bootstrap"
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, resp, err := a.commit.Commit(cctx, directory.AuthEntry(directory.AuthCmd{Op: directory.AuthBootstrap, AgentSecret: newSecret(32), Token: tok}))
	switch {
	case err != nil:
		a.log.Warn("bootstrapping the API's tokens", "err", err)
	case resp.Err != "":
		// Another leader did it first.
	case printed:
		a.log.Warn("bootstrap management token (shown once, keep it; or start the agents with -api-token-file)", "token", secret)
		if a.cfg.OnBootstrapToken != nil {
			a.cfg.OnBootstrapToken(secret)
		}
	default:
		a.log.Info("API tokens bootstrapped with -api-token-file's token")
	}
}

// readTokenFile reads the management token of -api-token-file, creating
// the file with a new token if it does not exist (several agents may
// race to: the first link wins and the others read its token).
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := createTokenFile(path); err != nil {
			return "", err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", err
	}
	// Whoever could write the file, or read it, would hold the
	// cluster's management token.
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("%s must be this user's (uid %d) and private (mode 0600), not uid %d mode %#o", path, os.Geteuid(), st.Uid, st.Mode&0o777)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 || strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("%s: a token is one word of at least 16 characters", path)
	}
	return s, nil
}

func createTokenFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".shi-token-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(newSecret(16) + "\n")
	if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Close()); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// serveSocket serves the API on the local Unix socket, to root and this
// agent's own user only (the socket's mode, and each connection's
// credentials), without a token.
func (a *agent) serveSocket(h http.Handler) (stop func(), err error) {
	path := a.cfg.APISocket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api socket: another agent is serving %s", path)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177) // no moment at which others may connect
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, socketKey{}, fmt.Sprintf("uid %d on the local socket", peerUID(c)))
		},
	}
	go srv.Serve(peerFilter{ln.(*net.UnixListener), a})
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		os.Remove(path)
	}, nil
}

// peerFilter drops connections from users other than root and the
// agent's own: the mode already refuses them, unless someone changes it.
type peerFilter struct {
	*net.UnixListener
	a *agent
}

func (l peerFilter) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.Accept()
		if err != nil {
			return nil, err
		}
		if uid := peerUID(c); uid == 0 || uid == os.Geteuid() {
			return c, nil
		}
		l.a.log.Warn("api socket: refused a connection", "uid", peerUID(c))
		c.Close()
	}
}

// peerUID is the uid of a Unix socket's peer (-1 if unknown).
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}
