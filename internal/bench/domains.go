package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"shi/api"
	"shi/guest/xs"
)

// DomainsConfig says how the domain benchmarks reach the agent and what
// their domains run.
type DomainsConfig struct {
	API      string // the agent's API URL
	Token    string // the API token ("" on the local socket or a dev agent)
	CACert   string // the CA of an HTTPS API (the cluster's, with -tls-*)
	Xenstore string // its XenStore socket (as domain 0)
	// Exe is the command of a benchmark domain, to which the role and its
	// parameters are appended; default: this program with "benchdomain".
	Exe []string
	Env []string // extra NAME=VALUE for the domains
	// Node pins both domains to one host (default: placement decides,
	// which on one host is that host).
	Node string
	// ProfileDir, if set, makes each domain write a CPU profile of its
	// role there (see CPUProfileEnv); it must be writable by the domains.
	ProfileDir string
	// Hosts, when set, places the first domain on Hosts[0] and the second
	// on Hosts[1]. Two different hosts make the benchmark a cross-host
	// one (Remote); the same host twice is Node. Leave Node empty then.
	Hosts [2]string
}

// Remote reports whether the two domains run on different hosts: the
// benchmark then measures shi alone, since no local baseline (an
// eventfd, a Unix socket) crosses hosts as its domains do.
func (c *DomainsConfig) Remote() bool {
	return c.Hosts[0] != "" && c.Hosts[1] != "" && c.Hosts[0] != c.Hosts[1]
}

// node is the host the i-th domain of a pair (0: the first) is created
// on; "" lets placement choose.
func (c *DomainsConfig) node(i int) string {
	if c.Hosts[i] != "" {
		return c.Hosts[i]
	}
	return c.Node
}

// ParseHosts parses "A,B", the two hosts of a benchmark's domains.
func ParseHosts(s string) ([2]string, error) {
	a, b, ok := strings.Cut(s, ",")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !ok || a == "" || b == "" || strings.Contains(b, ",") {
		return [2]string{}, fmt.Errorf("hosts %q: want two host names, A,B", s)
	}
	return [2]string{a, b}, nil
}

// Placement is where a benchmark's pair of domains goes, from the -node
// and -hosts flags of "shi bench": at most one of them may be set.
func Placement(node, hosts string) (DomainsConfig, error) {
	var c DomainsConfig
	switch {
	case node != "" && hosts != "":
		return c, errors.New("-node puts both domains on one host, -hosts one on each: give one of them")
	case hosts != "":
		h, err := ParseHosts(hosts)
		if err != nil {
			return c, err
		}
		c.Hosts = h
	default:
		c.Node = node
	}
	return c, nil
}

// where describes the pair's placement for a benchmark's header.
func (c *DomainsConfig) where() string {
	switch {
	case c.Remote():
		return fmt.Sprintf("a domain on %s and one on %s", c.Hosts[0], c.Hosts[1])
	case c.node(0) != "":
		return "two domains on " + c.node(0)
	}
	return "two local domains"
}

func (c *DomainsConfig) exe() ([]string, error) {
	if len(c.Exe) > 0 {
		return c.Exe, nil
	}
	p, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{p, "benchdomain"}, nil
}

// benchDomains runs a pair of benchmark domains: first is created, then
// second with PEER=<first's id>, then first learns second's id through
// XenStore (~/data/peer). It waits for result under the home of the
// domain named by resultOf (0: first, 1: second), then destroys both.
type benchPair struct {
	cfg    DomainsConfig
	client *api.Client
	xs     *xs.Client
	doms   []api.Domain
}

func newPair(cfg DomainsConfig) (*benchPair, error) {
	c, err := xs.Open(cfg.Xenstore)
	if err != nil {
		return nil, fmt.Errorf("xenstore: %w", err)
	}
	cl := api.NewClient(cfg.API)
	cl.Token = cfg.Token
	if cfg.CACert != "" && strings.HasPrefix(cfg.API, "https:") {
		cl.UseCA(cfg.CACert)
	}
	return &benchPair{cfg: cfg, client: cl, xs: c}, nil
}

// create creates the i-th domain of the pair (0: the first).
func (p *benchPair) create(ctx context.Context, i int, name string, role string, params ...string) (api.Domain, error) {
	exe, err := p.cfg.exe()
	if err != nil {
		return api.Domain{}, err
	}
	q := func(ss []string) string {
		var b strings.Builder
		for i, s := range ss {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Quote(s))
		}
		return b.String()
	}
	args := append(append(append([]string(nil), exe[1:]...), role), params...)
	env := p.cfg.Env
	if p.cfg.ProfileDir != "" {
		env = append(append([]string(nil), env...), CPUProfileEnv+"="+p.cfg.ProfileDir)
	}
	text := fmt.Sprintf("name = %q\ncmd = %q\nargs = [%s]\nenv = [%s]\nmemory = 32\nmax_maps = 8192\ngrant_frames = 16\nconsole = \"direct\"\n", name, exe[0], q(args), q(env))
	d, err := p.client.CreateDomain(ctx, api.DomainSpec{Config: text, Node: p.cfg.node(i)})
	if err != nil {
		return d, fmt.Errorf("create %s: %w", name, err)
	}
	p.doms = append(p.doms, d)
	return d, nil
}

// start creates the pair and introduces them.
func (p *benchPair) start(ctx context.Context, kind, firstRole, secondRole string, params ...string) error {
	tag := fmt.Sprintf("bench-%s-%d", kind, os.Getpid())
	a, err := p.create(ctx, 0, tag+"-a", firstRole, params...)
	if err != nil {
		return err
	}
	b, err := p.create(ctx, 1, tag+"-b", secondRole, append([]string{"peer=" + strconv.Itoa(int(a.ID))}, params...)...)
	if err != nil {
		return err
	}
	return p.xs.Write(fmt.Sprintf("/local/domain/%d/data/peer", a.ID), []byte(strconv.Itoa(int(b.ID))))
}

// result waits for key in the home of domain i and returns it. If a
// domain of the pair ends first, it fails at once with how that domain
// ended and its last output: a domain that dies at start is reported,
// not waited for. (Its XenStore home is no sign of life: writing a key
// there as domain 0 creates it again.)
func (p *benchPair) result(ctx context.Context, i int, key string, timeout time.Duration) (string, error) {
	path := fmt.Sprintf("/local/domain/%d/data/%s", p.doms[i].ID, key)
	w, err := p.xs.Watch(path, "bench")
	if err != nil {
		return "", err
	}
	defer p.xs.Unwatch(w)
	// Fires when any domain is released, and once when set: a domain may
	// have ended before.
	rel, err := p.xs.Watch("@releaseDomain", "bench-rel")
	if err != nil {
		return "", err
	}
	defer p.xs.Unwatch(rel)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if v, err := p.xs.Read(path); err == nil {
			return string(v), nil
		}
		select {
		case <-w.Events():
		case <-rel.Events():
			if err := p.alive(ctx); err != nil {
				return "", err
			}
		case <-deadline.C:
			return "", fmt.Errorf("no result from %s within %v", p.doms[i].Name, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// alive checks in the domain table that both domains of the pair still
// run, and if one does not, says how it ended, with its last output.
func (p *benchPair) alive(ctx context.Context) error {
	ds, err := p.client.ListDomains(ctx)
	if err != nil {
		return err
	}
	running := map[uint32]bool{}
	for _, d := range ds {
		if d.State == "running" {
			running[d.ID] = true
		}
	}
	for _, d := range p.doms {
		if !running[d.ID] {
			return p.ended(ctx, d)
		}
	}
	return nil
}

// ended is the error for a domain of the pair that is no longer running.
func (p *benchPair) ended(ctx context.Context, d api.Domain) error {
	var b strings.Builder
	fmt.Fprintf(&b, "domain %s (id %d on %s) ended before its result came", d.Name, d.ID, d.Host)
	o, err := p.client.DomainOutput(ctx, strconv.Itoa(int(d.ID)), d.Host)
	switch {
	case err != nil:
		fmt.Fprintf(&b, "; its output is not known: %v", err)
	case len(o.Lines) == 0:
		fmt.Fprintf(&b, " (%s); it wrote nothing", o.Exit)
	default:
		fmt.Fprintf(&b, " (%s); its last output:", o.Exit)
		for _, l := range o.Lines {
			b.WriteString("\n    " + l)
		}
	}
	return errors.New(b.String())
}

// run starts run i in every domain of the pair and returns the nanosecond
// figure that domain i published for it.
func (p *benchPair) run(ctx context.Context, i, run int) (time.Duration, error) {
	for _, d := range p.doms {
		if err := p.xs.Write(fmt.Sprintf("/local/domain/%d/data/go", d.ID), []byte(strconv.Itoa(run))); err != nil {
			return 0, err
		}
	}
	v, err := p.result(ctx, i, "result/"+strconv.Itoa(run), 5*time.Minute)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad result %q", v)
	}
	return time.Duration(n), nil
}

func (p *benchPair) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if p.cfg.ProfileDir != "" {
		// A domain writes its profile after its last result.
		time.Sleep(time.Second)
	}
	for _, d := range p.doms {
		p.client.DestroyDomain(ctx, strconv.Itoa(int(d.ID)))
	}
	p.xs.Close()
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func medianF(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
