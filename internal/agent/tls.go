package agent

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"shi/api"
	"shi/internal/tlsconf"
)

// Mutual TLS between agents (-tls-ca, -tls-cert, -tls-key). With it the
// API is HTTPS, and every connection one agent makes to another (Raft,
// the data plane, forwarded API calls, the directory's forwarded commits,
// proxied consoles) presents this host's certificate and checks the
// peer's against membership: it must name the member at the address it
// speaks from (tlsconf.Check).

// loadTLS reads the certificates; membership, which starts later, is
// asked at each handshake.
func (a *agent) loadTLS() error {
	if a.cfg.TLSCA == "" {
		return nil
	}
	tc, err := tlsconf.Load(a.cfg.TLSCA, a.cfg.TLSCert, a.cfg.TLSKey)
	if err != nil {
		return err
	}
	tc.Members = a.tlsMembers
	a.tls = tc
	return nil
}

// tlsMembers is membership's view for the certificate checks: each
// member's name and the IP it gossips from, which is the one its agent
// binds for Raft, data and the API.
func (a *agent) tlsMembers() []tlsconf.Member {
	if a.members == nil {
		return nil
	}
	var out []tlsconf.Member
	for _, m := range a.members.Members() {
		host, _, err := net.SplitHostPort(m.Addr)
		if err != nil {
			continue
		}
		out = append(out, tlsconf.Member{Name: m.Name, IP: net.ParseIP(host)})
	}
	return out
}

// dialPeer is how agents reach each other's APIs with TLS on: from this
// host's -bind address (the one its certificate and membership name), and
// through the test fault hook if any.
func (a *agent) dialPeer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(a.cfg.BindIP)}}
	dial := d.DialContext
	if a.faults != nil {
		dial = a.faults.Dial(dial)
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(raw, a.tls.Client(addr, ""))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			// Not delivered: callers may try again, or elsewhere.
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
		return tc, nil
	}
}

// peerTransport is the transport for other agents' APIs with TLS on.
func (a *agent) peerTransport(dialTimeout time.Duration, idle int) *http.Transport {
	return &http.Transport{DialTLSContext: a.dialPeer(dialTimeout), MaxIdleConnsPerHost: idle, ForceAttemptHTTP2: false}
}

// peersKey carries, in each API request's context, the transport that
// forwarded calls of that request use (forwardTLS).
type peersKey struct{}

// withPeers gives the API's requests this agent's forwarding transport.
func (a *agent) withPeers(h http.Handler) http.Handler {
	if a.tls == nil {
		return h
	}
	rt := a.peerTransport(5*time.Second, 0)
	rt.DisableKeepAlives = true // as forwardHTTP's: a dial per call
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peersKey{}, http.RoundTripper(rt))))
	})
}

// forwardTLS sends a forwarded call through the transport of the agent
// whose request it serves (mutual TLS), or next without TLS.
type forwardTLS struct{ next http.RoundTripper }

func (f forwardTLS) RoundTrip(req *http.Request) (*http.Response, error) {
	if rt, ok := req.Context().Value(peersKey{}).(http.RoundTripper); ok {
		return rt.RoundTrip(req)
	}
	return f.next.RoundTrip(req)
}

// consoleClient is the client a proxied console dials another agent
// with: nil (the default) without TLS.
func (a *agent) consoleClient() *http.Client {
	if a.tls == nil {
		return nil
	}
	return &http.Client{Transport: a.peerTransport(10*time.Second, 0)}
}

// member admits only other agents to h (the directory's forwarded commits
// and read indexes, keyring changes) when TLS is on: the client's
// certificate must name the member at its address.
func (a *agent) member(h http.HandlerFunc) http.HandlerFunc {
	if a.tls == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if r.TLS == nil {
			api.WriteError(w, http.StatusForbidden, "agents only: no TLS")
			return
		}
		if _, err := a.tls.Verify(r.TLS.PeerCertificates, net.ParseIP(host)); err != nil {
			api.WriteError(w, http.StatusForbidden, "agents only: "+err.Error())
			return
		}
		h(w, r)
	}
}
