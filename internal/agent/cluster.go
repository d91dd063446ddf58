package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"shi/internal/directory"
	"shi/internal/membership"
)

// startCluster starts membership and the directory's Raft server and the
// loops that tie them together. stop shuts them down.
func (a *agent) startCluster(ctx context.Context, wg *sync.WaitGroup) (stop func(), err error) {
	cfg := a.cfg
	nc := directory.NodeConfig{
		ID:       cfg.Name,
		DataDir:  filepath.Join(cfg.DataDir, "raft"),
		BindAddr: net.JoinHostPort(cfg.BindIP, fmt.Sprint(cfg.RaftPort)),
		Faults:   a.faults,
		TLS:      a.tls,
		Logger:   a.log.With("sub", "raft"),
		// Followers learn that an entry committed from the next append,
		// which Raft sends at the latest after CommitTimeout (1-2x, random).
		// A follower's writes wait for that (read-your-writes), so keep it
		// short: a few small appends per second per follower when idle.
		CommitTimeout:     5 * time.Millisecond,
		SnapshotThreshold: cfg.SnapshotThreshold,
	}
	if cfg.SnapshotThreshold > 0 {
		nc.SnapshotInterval = time.Second // check often, so the threshold is what decides
	}
	if cfg.TestTiming {
		nc.HeartbeatTimeout = 300 * time.Millisecond
		nc.ElectionTimeout = 300 * time.Millisecond
		nc.LeaderLeaseTimeout = 200 * time.Millisecond
	}
	node, err := directory.NewNode(nc, a.replica)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	a.node = node
	a.cluster = &directory.Cluster{Node: node, APIOf: a.apiOf, HTTP: a.peerHTTP(), Key: cfg.EncryptKey}
	a.commit = a.cluster
	if err := a.startDataPlane(); err != nil {
		node.Shutdown()
		return nil, err
	}

	mc := membership.DefaultConfig()
	if cfg.TestTiming {
		mc = membership.DefaultTestConfig()
	}
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindIP
	mc.BindPort = cfg.GossipPort
	mc.Join = cfg.Join
	if mc.EncryptKey, mc.Keys, err = a.gossipKeys(); err != nil {
		a.mesh.Close()
		node.Shutdown()
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	mc.Logger = a.log.With("sub", "membership")
	mc.Faults = a.faults
	mc.Meta = a.localMeta()
	m, err := membership.New(mc)
	if err != nil {
		a.mesh.Close()
		node.Shutdown()
		return nil, fmt.Errorf("membership: %w", err)
	}
	a.members = m
	// Contact the seeds now, not at the reconnect loop's first tick: a
	// host that joins a running cluster must learn of it before the
	// bootstrap loop (one stable second) could think it alone.
	if len(cfg.Join) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := m.Join(cfg.Join); n == 0 {
				a.log.Info("no seed answered yet; the reconnect loop keeps trying", "join", cfg.Join, "err", err)
			}
		}()
	}

	loops := []func(context.Context){a.bootstrapLoop, a.leaderLoop, a.eventLoop, a.metaLoop, a.domainLoop, a.authLoop}
	wg.Add(len(loops))
	for _, l := range loops {
		go func() {
			defer wg.Done()
			l(ctx)
		}()
	}
	return func() {
		a.members.Leave(2 * time.Second)
		a.members.Shutdown()
		a.mesh.Close()
		a.node.Shutdown()
	}, nil
}

// peerHTTP is the client for other agents' APIs (forwarded changes), with
// the test fault hook on its connections.
func (a *agent) peerHTTP() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	if a.faults != nil {
		t.DialContext = a.faults.Dial((&net.Dialer{Timeout: 10 * time.Second}).DialContext)
	}
	if a.tls != nil {
		t = a.peerTransport(10*time.Second, 16)
	}
	return &http.Client{Transport: agentAuth{a, t}, Timeout: 30 * time.Second}
}

func (a *agent) localMeta() membership.Meta {
	cpus, total, free := hostResources()
	return membership.Meta{
		InCluster: a.node.HasState(),
		APIURL:    a.apiURL,
		RaftAddr:  net.JoinHostPort(a.cfg.BindIP, fmt.Sprint(a.cfg.RaftPort)),
		DataAddr:  a.mesh.Addr().String(),
		CPUs:      cpus,
		MemTotal:  total,
		MemFree:   free,
		Version:   Version,
	}
}

// apiOf returns the API URL membership advertises for a host.
func (a *agent) apiOf(name string) string {
	for _, m := range a.members.Members() {
		if m.Name == name {
			return m.Meta.APIURL
		}
	}
	return ""
}

// hostsView turns membership into what the voter planner needs.
func (a *agent) hostsView() []directory.Host {
	now := time.Now()
	var out []directory.Host
	for _, m := range a.members.Members() {
		h := directory.Host{Name: m.Name, RaftAddr: m.Meta.RaftAddr, Alive: m.State == membership.StateAlive,
			Left: m.State == membership.StateLeft, InCluster: m.Meta.InCluster}
		if !h.Alive {
			h.DownFor = now.Sub(m.StateChange)
		}
		out = append(out, h)
	}
	return out
}

// bootstrapLoop bootstraps the directory once the first BootstrapExpect
// hosts are alive and the view has been stable for a moment, if this host
// is one of them and no cluster exists yet.
func (a *agent) bootstrapLoop(ctx context.Context) {
	var last []directory.Server
	stableSince := time.Now()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.node.HasState() || a.node.Leader() != "" {
			// Tell the others at once, so nobody bootstraps beside us.
			a.members.UpdateMeta(a.localMeta(), 2*time.Second)
			return
		}
		voters, ok := directory.InitialVoters(a.hostsView(), a.cfg.BootstrapExpect)
		if !ok || !sameServers(voters, last) {
			last, stableSince = voters, time.Now()
			continue
		}
		if time.Since(stableSince) < time.Second || !containsServer(voters, a.cfg.Name) {
			continue
		}
		a.log.Info("bootstrapping the directory", "voters", voters)
		if err := a.node.Bootstrap(voters); err != nil {
			a.log.Error("bootstrap failed", "err", err)
		}
		return
	}
}

func sameServers(a, b []directory.Server) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func containsServer(s []directory.Server, id string) bool {
	for _, x := range s {
		if x.ID == id {
			return true
		}
	}
	return false
}

// leaderLoop runs on every host and acts while this host leads: it writes
// the cluster's first keys, keeps the voter set right, and marks the
// domains of dead hosts crashed.
func (a *agent) leaderLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	wasLeader := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.node.Ready() {
			wasLeader = false
			continue
		}
		if !wasLeader {
			// New term, and this leader has applied everything before it:
			// write the cluster's first keys (once per cluster) and this
			// leader's quota.
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := a.bootstrapStore(cctx); err != nil {
				a.log.Warn("writing the first keys", "err", err)
			}
			if err := a.syncQuota(cctx); err != nil {
				a.log.Warn("setting the quota", "err", err)
			}
			cancel()
			wasLeader = true
		}
		hosts := a.hostsView()
		if servers, err := a.node.Configuration(); err == nil {
			if ch, ok := directory.PlanVoters(servers, hosts, a.cfg.Name, a.cfg.BootstrapExpect, a.cfg.VoterGrace); ok {
				a.applyChange(ch)
			}
		}
		a.markDeadHosts(ctx, hosts)
	}
}

func (a *agent) applyChange(ch directory.Change) {
	a.log.Info("changing the directory's voters", "change", ch.Kind.String(), "host", ch.ID, "addr", ch.Address)
	var err error
	switch ch.Kind {
	case directory.AddVoter:
		err = a.node.AddVoter(ch.ID, ch.Address)
	case directory.AddNonvoter:
		err = a.node.AddNonvoter(ch.ID, ch.Address)
	case directory.RemoveServer:
		err = a.node.RemoveServer(ch.ID)
	}
	if err != nil {
		a.log.Warn("voter change failed", "change", ch.Kind.String(), "host", ch.ID, "err", err)
	}
}

// markDeadHosts hands the hosts membership sees failed that have domains
// in the table to the domain manager, which marks their domains crashed
// (@releaseDomain fires everywhere) and follows their on_crash.
func (a *agent) markDeadHosts(ctx context.Context, hosts []directory.Host) {
	dead := map[string]bool{}
	for _, h := range hosts {
		if !h.Alive {
			dead[h.Name] = true
		}
	}
	done := map[string]bool{}
	for _, d := range a.replica.Domains() {
		if !dead[d.Host] || done[d.Host] {
			continue
		}
		done[d.Host] = true
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.domains.HostDown(cctx, d.Host)
		cancel()
		if err != nil {
			a.log.Warn("handling the domains of a dead host", "host", d.Host, "err", err)
		}
	}
}

// eventLoop logs membership changes and tells the data plane about
// hosts that failed or left.
func (a *agent) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-a.members.Events():
			if !ok {
				return
			}
			a.log.Info("membership", "event", ev.Type.String(), "host", ev.Member.Name, "addr", ev.Member.Addr)
			a.hostDown(ev)
		}
	}
}

// metaLoop refreshes the free memory this host gossips.
func (a *agent) metaLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.members.UpdateMeta(a.localMeta(), 2*time.Second)
		}
	}
}
