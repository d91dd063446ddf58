package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shi/api"
	"shi/guest/xs"
	"shi/internal/nstest"
)

// Options configures Start.
type Options struct {
	// Hosts is the number of hosts, one agent each.
	Hosts int
	// BootstrapExpect is the number of voters; default Hosts when that is
	// 1, 3 or 5, else 3.
	BootstrapExpect int
	// ConsistentReads starts every agent with -consistent-reads.
	ConsistentReads bool
	// DefaultTiming leaves out -test-timing: memberlist's and Raft's own
	// timeouts, as in production.
	DefaultTiming bool
	// SnapshotThreshold, if set, is passed as -snapshot-threshold.
	SnapshotThreshold uint64
	// CommitTimeout, if set, is passed as -commit-timeout.
	CommitTimeout time.Duration
	// Args are more agent flags.
	Args []string
	// TLS starts the agents with mutual TLS: certificates made with
	// "shi tls" in Cluster.TLSDir, the API over HTTPS.
	TLS bool
	// Ready bounds how long Start waits for the cluster (default 60 s).
	Ready time.Duration
	// Strangers is how many more test hosts share the cluster's network
	// without an agent (Cluster.Stranger): machines that are not members.
	Strangers int
}

// Cluster is a running shi cluster on test hosts.
type Cluster struct {
	// NS is the test hosts the agents run on.
	NS *nstest.Cluster
	// Bin is the shi binary.
	Bin string
	// TLSDir holds the CA and the hosts' certificates (Options.TLS).
	TLSDir string
	// Token is the management token every agent is started with
	// (-api-token-file); Host.API and Host.Env carry it.
	Token string
	// TokenFile is the file it is in.
	TokenFile string

	t     testing.TB
	opts  Options
	hosts []*Host
}

// Host is one test host and its agent.
type Host struct {
	Index   int
	Name    string // the agent's -name: "h<Index>"
	IP      string
	DataDir string
	Socket  string      // the XenStore socket (XENSTORED_PATH)
	URL     string      // the API (SHI_AGENT)
	API     *api.Client // a client of URL

	c *Cluster

	// mu guards the fields below.
	mu     sync.Mutex
	proc   *nstest.Proc
	frozen bool
	cut    bool
}

// Start builds shi, starts opts.Hosts agents and waits until every host
// sees all of them alive and the same leader, and every agent serves
// XenStore. It skips the test with -short or when not root.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.BootstrapExpect == 0 {
		opts.BootstrapExpect = 3
		if opts.Hosts == 1 || opts.Hosts == 3 || opts.Hosts == 5 {
			opts.BootstrapExpect = opts.Hosts
		}
	}
	if opts.Ready == 0 {
		opts.Ready = 60 * time.Second
	}
	// The directories come first: cleanups run last-in first-out, so
	// they are removed only after nstest has killed the agents writing
	// to them.
	dataDir := t.TempDir()
	// Unix socket paths are limited to 108 bytes, which t.TempDir can
	// exceed with long test names.
	sockDir, err := os.MkdirTemp("", "shict-")
	if err != nil {
		t.Fatal(err)
	}
	// Domains, under uids of their own, must reach the sockets.
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ns := nstest.New(t, nstest.Options{Hosts: opts.Hosts + opts.Strangers})
	c := &Cluster{NS: ns, Bin: nstest.BuildShi(t), t: t, opts: opts}
	if opts.TLS {
		c.makeTLS(filepath.Join(dataDir, "tls"))
	}
	c.Token, c.TokenFile = newToken(t, dataDir)
	// Before nstest kills the agents (cleanups run last first): a failed
	// test shows where each agent's goroutines were.
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.hosts {
				c.dumpGoroutines(h)
			}
		}
	})
	for i, nh := range ns.Hosts()[:opts.Hosts] {
		h := &Host{
			Index:   i,
			Name:    "h" + strconv.Itoa(i),
			IP:      nh.IP,
			DataDir: filepath.Join(dataDir, "h"+strconv.Itoa(i)),
			Socket:  filepath.Join(sockDir, "h"+strconv.Itoa(i)+".sock"),
			URL:     c.scheme() + "://" + nh.IP + ":7070",
			c:       c,
		}
		// The hosts' addresses exist only inside their namespaces: dial
		// the API from there.
		h.API = api.NewClient(h.URL)
		h.API.Token = c.Token
		h.API.HTTP = &http.Client{
			Timeout:   5 * time.Second,
			Transport: h.Transport(),
		}
		c.hosts = append(c.hosts, h)
	}
	for _, h := range c.hosts {
		h.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Ready)
	defer cancel()
	c.Leader(ctx)
	return c
}

// Host returns host i.
func (c *Cluster) Host(i int) *Host {
	if i < 0 || i >= len(c.hosts) {
		c.t.Fatalf("clustertest: no host %d in a cluster of %d", i, len(c.hosts))
	}
	return c.hosts[i]
}

// Stranger returns test host i of Options.Strangers: on the cluster's
// network, running no agent.
func (c *Cluster) Stranger(i int) *nstest.Host {
	if i < 0 || i >= c.opts.Strangers {
		c.t.Fatalf("clustertest: no stranger %d of %d", i, c.opts.Strangers)
	}
	return c.NS.Host(c.opts.Hosts + i)
}

// Hosts returns every host.
func (c *Cluster) Hosts() []*Host { return slices.Clone(c.hosts) }

// args is the agent's command line.
func (h *Host) args() []string {
	o := h.c.opts
	var join []string
	for _, x := range h.c.hosts {
		if x != h {
			join = append(join, x.IP)
		}
	}
	a := []string{h.c.Bin, "agent",
		"-name", h.Name,
		"-data-dir", h.DataDir,
		"-bind", h.IP,
		"-join", strings.Join(join, ","),
		"-bootstrap-expect", strconv.Itoa(o.BootstrapExpect),
		"-xenstore-socket", h.Socket,
		"-api-token-file", h.c.TokenFile,
		"-test-faults",
	}
	if !o.DefaultTiming {
		a = append(a, "-test-timing")
	}
	a = append(a, h.tlsArgs()...)
	if o.ConsistentReads {
		a = append(a, "-consistent-reads")
	}
	if o.SnapshotThreshold > 0 {
		a = append(a, "-snapshot-threshold", strconv.FormatUint(o.SnapshotThreshold, 10))
	}
	if o.CommitTimeout > 0 {
		a = append(a, "-commit-timeout", o.CommitTimeout.String())
	}
	return append(a, o.Args...)
}

// Start starts the host's agent (on its data dir, which keeps what an
// earlier run left) and waits until it prints where it serves.
func (h *Host) Start() {
	t := h.c.t
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc != nil {
		select {
		case <-h.proc.Done():
		default:
			t.Fatalf("clustertest: %s: agent already running", h.Name)
		}
	}
	p, err := h.c.NS.Host(h.Index).Start(context.Background(), h.args(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.proc, h.frozen = p, false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := api.EnvAgent + "=" + h.URL + "\n"
	if err := p.WaitOutput(ctx, func(out string) bool { return strings.Contains(out, want) }); err != nil {
		t.Fatalf("clustertest: %s: %v\n%s", h.Name, err, tail(p.Output(), 4096))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// dial opens a connection from inside the host's network namespace.
func (h *Host) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := h.c.NS.Host(h.Index).Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Proc returns the agent's process (the latest one after a restart).
func (h *Host) Proc() *nstest.Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc
}

// Kill kills the agent with SIGKILL and waits for it to exit.
func (h *Host) Kill() {
	h.c.t.Helper()
	if p := h.Proc(); p != nil {
		if err := p.Kill(); err != nil {
			h.c.t.Fatalf("clustertest: kill %s: %v", h.Name, err)
		}
	}
	h.mu.Lock()
	h.frozen = false
	h.mu.Unlock()
}

// Stop asks the agent to leave and exit (SIGTERM) and waits for it.
func (h *Host) Stop() {
	h.c.t.Helper()
	p := h.Proc()
	if p == nil {
		return
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		h.c.t.Fatalf("clustertest: stop %s: %v", h.Name, err)
	}
	<-p.Done()
}

// Restart kills the agent if it runs and starts it again on its data dir.
func (h *Host) Restart() {
	h.c.t.Helper()
	h.Kill()
	h.Start()
}

// Freeze stops the agent with SIGSTOP: it stays on the network but does
// not answer, like a hung machine.
func (h *Host) Freeze() {
	h.c.t.Helper()
	if err := h.Proc().Freeze(); err != nil {
		h.c.t.Fatalf("clustertest: freeze %s: %v", h.Name, err)
	}
	h.mu.Lock()
	h.frozen = true
	h.mu.Unlock()
}

// Thaw resumes a frozen agent.
func (h *Host) Thaw() {
	h.c.t.Helper()
	if err := h.Proc().Thaw(); err != nil {
		h.c.t.Fatalf("clustertest: thaw %s: %v", h.Name, err)
	}
	h.mu.Lock()
	h.frozen = false
	h.mu.Unlock()
}

// Running reports whether the agent's process runs (frozen or not).
func (h *Host) Running() bool {
	p := h.Proc()
	if p == nil {
		return false
	}
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// Up reports whether the host takes part: its agent runs, is not frozen
// and its cable is in.
func (h *Host) Up() bool {
	h.mu.Lock()
	frozen, cut := h.frozen, h.cut
	h.mu.Unlock()
	return !frozen && !cut && h.Running()
}

// Cut pulls host i's cable; its agent keeps running.
func (c *Cluster) Cut(i int) {
	c.t.Helper()
	h := c.Host(i)
	c.NS.Cut(i)
	h.mu.Lock()
	h.cut = true
	h.mu.Unlock()
}

// Heal plugs host i's cable back in.
func (c *Cluster) Heal(i int) {
	c.t.Helper()
	h := c.Host(i)
	c.NS.Heal(i)
	h.mu.Lock()
	h.cut = false
	h.mu.Unlock()
}

// Up lists the indexes of the hosts that are up (see Host.Up).
func (c *Cluster) Up() []int {
	var up []int
	for _, h := range c.hosts {
		if h.Up() {
			up = append(up, h.Index)
		}
	}
	return up
}

// Leader waits until the hosts that are up agree: each sees all of them
// alive and the same one of them as leader, and each serves XenStore. It
// returns the leader's index and fails the test when ctx ends first.
func (c *Cluster) Leader(ctx context.Context) int {
	c.t.Helper()
	l, err := c.WaitConverged(ctx, c.Up())
	if err != nil {
		c.t.Fatalf("clustertest: %v", err)
	}
	return l
}

// WaitConverged waits until every host in hosts sees every host in hosts
// alive and the same leader among them, and reads /local/domain/0/name
// (written once by the first leader) from its own agent. It returns the
// leader's index.
func (c *Cluster) WaitConverged(ctx context.Context, hosts []int) (int, error) {
	return c.waitConverged(ctx, hosts, true)
}

// WaitMembers is WaitConverged without the XenStore read: only the agents'
// views of membership and leadership must agree.
func (c *Cluster) WaitMembers(ctx context.Context, hosts []int) (int, error) {
	return c.waitConverged(ctx, hosts, false)
}

func (c *Cluster) waitConverged(ctx context.Context, hosts []int, serving bool) (int, error) {
	var last error
	leader := -1
	err := Poll(ctx, 50*time.Millisecond, func() bool {
		leader, last = c.converged(ctx, hosts, serving)
		return last == nil
	})
	if err != nil {
		return -1, fmt.Errorf("hosts %v did not converge: %w (last: %v)", hosts, err, last)
	}
	return leader, nil
}

func (c *Cluster) converged(ctx context.Context, hosts []int, serving bool) (int, error) {
	leader := ""
	for _, i := range hosts {
		h := c.Host(i)
		nodes, err := h.Nodes(ctx)
		if err != nil {
			return -1, fmt.Errorf("%s: %v", h.Name, err)
		}
		seen := map[string]api.Node{}
		l := ""
		for _, n := range nodes {
			seen[n.Name] = n
			if n.Role == "leader" {
				l = n.Name
			}
		}
		for _, j := range hosts {
			if n := seen[c.Host(j).Name]; n.State != "alive" {
				return -1, fmt.Errorf("%s sees %s as %q", h.Name, c.Host(j).Name, n.State)
			}
		}
		if l == "" {
			return -1, fmt.Errorf("%s sees no leader", h.Name)
		}
		if leader != "" && l != leader {
			return -1, fmt.Errorf("%s sees leader %s, others %s", h.Name, l, leader)
		}
		leader = l
	}
	li := c.index(leader)
	if !slices.Contains(hosts, li) {
		return -1, fmt.Errorf("leader %s is not among hosts %v", leader, hosts)
	}
	if !serving {
		return li, nil
	}
	for _, i := range hosts {
		h := c.Host(i)
		x, err := xs.Open(h.Socket)
		if err != nil {
			return -1, fmt.Errorf("%s: %v", h.Name, err)
		}
		err = Within(x, 5*time.Second, func() error {
			_, err := x.Read("/local/domain/0/name")
			return err
		})
		x.Close()
		if err != nil {
			return -1, fmt.Errorf("%s: read /local/domain/0/name: %v", h.Name, err)
		}
	}
	return li, nil
}

func (c *Cluster) index(name string) int {
	for _, h := range c.hosts {
		if h.Name == name {
			return h.Index
		}
	}
	return -1
}

// Nodes returns /v1/nodes as this host's agent sees it.
func (h *Host) Nodes(ctx context.Context) ([]api.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.API.Nodes(ctx)
}

// StateOf returns the membership state ("alive", "failed", "left") of
// host target as this host sees it, "" if it does not know it.
func (h *Host) StateOf(ctx context.Context, target *Host) (string, error) {
	nodes, err := h.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if n.Name == target.Name {
			return n.State, nil
		}
	}
	return "", nil
}

// XS opens a XenStore client of the host's agent, closed when the test
// ends.
func (h *Host) XS() *xs.Client {
	h.c.t.Helper()
	x, err := xs.Open(h.Socket)
	if err != nil {
		h.c.t.Fatalf("clustertest: %s: %v", h.Name, err)
	}
	h.c.t.Cleanup(func() { x.Close() })
	return x
}

// Env is the environment that points Xen's tools and the shi CLI at this
// host's agent.
func (h *Host) Env() []string {
	return append([]string{api.EnvXenstore + "=" + h.Socket, api.EnvAgent + "=" + h.URL, api.EnvToken + "=" + h.c.Token}, h.c.tlsEnv()...)
}

// Transport is an HTTP transport to the agent's API from inside its
// namespace, with the cluster's management token on every request (raw
// requests too: faults, /metrics, /debug).
func (h *Host) Transport() http.RoundTripper {
	return bearer{h.c.Token, &http.Transport{DialContext: h.dial, MaxIdleConnsPerHost: 4, TLSClientConfig: h.c.clientTLS()}}
}

// bearer adds a token to requests that carry none.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(req)
}

// newToken writes a new management token into dir/token.
func newToken(t testing.TB, dir string) (token, file string) {
	b := make([]byte, 16)
	rand.Read(b)
	token, file = hex.EncodeToString(b), filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, file
}

// Faults is the body of POST /v1/internal/faults: the transport fault hook
// of one agent (its egress delay, datagram loss and blocked peers).
type Faults struct {
	DelayMs  float64  `json:"delay_ms"`
	JitterMs float64  `json:"jitter_ms"`
	Loss     float64  `json:"loss"`
	Block    []string `json:"block,omitempty"`
	Unblock  []string `json:"unblock,omitempty"`
	Reset    bool     `json:"reset,omitempty"`
}

// SetFaults sets the agent's fault hook.
func (h *Host) SetFaults(ctx context.Context, f Faults) error {
	b, _ := json.Marshal(f)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+"/v1/internal/faults", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.API.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s: faults: %w", h.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: faults: %s", h.Name, resp.Status)
	}
	return nil
}

// SetFaultsAll sets the same faults on every running agent: a delay set on
// all of them delays both directions of every link.
func (c *Cluster) SetFaultsAll(ctx context.Context, f Faults) {
	c.t.Helper()
	for _, h := range c.hosts {
		if h.Up() {
			if err := h.SetFaults(ctx, f); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// ErrTimeout is returned by Within when fn did not finish in time.
var ErrTimeout = errors.New("clustertest: xenstore request timed out")

// Within runs fn, which uses x, and bounds how long it may take: past d it
// closes x, which fails fn's pending and later requests, and returns
// ErrTimeout. x is then unusable; open a new client.
func Within(x *xs.Client, d time.Duration, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		x.Close()
		<-done
		return ErrTimeout
	}
}

// Poll calls cond every interval until it returns true, or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// dumpGoroutines logs where h's agent's goroutines are (its test-only
// /debug/goroutines).
func (c *Cluster) dumpGoroutines(h *Host) {
	if !h.Up() {
		return
	}
	resp, err := h.API.HTTP.Get(h.URL + "/debug/goroutines")
	if err != nil {
		c.t.Logf("clustertest: %s: goroutines: %v", h.Name, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	c.t.Logf("clustertest: %s's agent goroutines:\n%s", h.Name, b)
}
