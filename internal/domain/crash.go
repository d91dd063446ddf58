package domain

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"shi/internal/abi"
	"shi/internal/directory"
)

// How a domain's end reaches the directory:
//
//   - destroyed (shi destroy, agent shutdown) or shut down (exit code 0):
//     removed from the table (DomRemove: its home goes, @releaseDomain
//     fires);
//   - crashed (a failing exit or a signal, or its processes gone without
//     a destroy because its agent or its host died): on_crash = "destroy"
//     removes it as above; on_crash = "restart" marks it crashed (released
//     at once, its name free) and starts it again on its host, under a new
//     domid, which takes over the entry.
//
// A domain whose agent died is found by that agent's successor
// (Reconcile); one whose host died, by the leader (HostDown). A host
// declared dead keeps its restartable domains crashed until its agent
// returns and restarts them (never elsewhere: a host only cut off still
// runs them, and two copies must not run).

// reconcileEvery is how often Reconcile compares the directory with the
// processes of this host.
const reconcileEvery = time.Second

// storedConfig is a domain's config as the directory keeps it: the parsed
// file and the directory relative paths were taken from, enough to start
// the domain again.
type storedConfig struct {
	Config
	Dir string `json:"dir,omitempty"`
}

// configOf reads back a domain's stored config.
func configOf(d directory.Domain) (*Config, Spec, error) {
	var sc storedConfig
	if err := json.Unmarshal(d.Config, &sc); err != nil {
		return nil, Spec{}, err
	}
	return &sc.Config, Spec{Dir: sc.Dir}, nil
}

// restartsOnCrash reports whether d's config says on_crash = "restart".
func restartsOnCrash(d directory.Domain) bool {
	cfg, _, err := configOf(d)
	return err == nil && cfg.OnCrash == OnCrashRestart
}

// exited releases a domain whose process ended.
func (m *Manager) exited(r *running, st ExitStatus) {
	defer m.wg.Done()
	st.OOM = m.reap(r) // whatever it left behind, in its cgroup or session
	// Its last lines may still be in the pipe. A process that left the
	// session could hold the pipe open for ever: do not wait for that.
	select {
	case <-r.outEOF:
	case <-time.After(time.Second):
	}
	m.mu.Lock()
	st.Destroyed = r.destroying || m.closed
	fenced := r.fenced
	delete(m.sessions, r.pid)
	delete(m.running, r.dom.ID)
	m.releasing[r.dom.ID] = true
	m.recordEndLocked(r, st) // before @releaseDomain, which tells the world it ended
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.releasing, r.dom.ID)
		m.mu.Unlock()
	}()
	m.hv.RemoveDomain(abi.DomID(r.dom.ID))
	m.removeRunDir(r.dom.ID, r.cfg)
	restart := !fenced && st.Crashed() && r.cfg.OnCrash == OnCrashRestart
	switch {
	case fenced:
		// The directory had ended it already; Reconcile follows its
		// on_crash.
	case restart:
		m.setCrashed(r.dom.ID)
	default:
		m.removeEntry(r.dom.ID)
	}
	m.log.Info("domain exited", "dom", r.dom.ID, "name", r.dom.Name, "status", st.String())
	if m.cfg.OnExit != nil {
		m.cfg.OnExit(r.dom, st)
	}
	close(r.exited)
	if restart {
		m.restart(context.Background(), r.dom, r.cfg, r.spec)
	}
}

// restart starts crashed domain d again on this host with config cfg:
// the same name and uuid, a new domid; the new domain takes over d's
// entry. Past the restart limit, or when its name has been taken
// meanwhile, d is removed instead. Another failure leaves d crashed, for
// Reconcile to try again.
func (m *Manager) restart(ctx context.Context, d directory.Domain, cfg *Config, spec Spec) {
	now := time.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	var recent []time.Time
	for _, t := range m.restarts[cfg.Name] {
		if now.Sub(t) < m.cfg.RestartWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) >= m.cfg.RestartLimit {
		m.mu.Unlock()
		m.log.Warn("domain crashed too often; not restarting it", "name", cfg.Name, "restarts", len(recent), "window", m.cfg.RestartWindow)
		m.removeEntry(d.ID)
		return
	}
	m.restarts[cfg.Name] = append(recent, now)
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := *cfg
	c.UUID = d.UUID // the same VM, rebooted: a new domid, the same uuid
	nd, err := m.createHere(ctx, &c, spec)
	switch {
	case errors.Is(err, ErrNameInUse):
		m.log.Warn("crashed domain not restarted: another domain has its name", "dom", d.ID, "name", d.Name)
		m.removeEntry(d.ID)
	case err != nil:
		m.log.Error("domain restart failed", "name", cfg.Name, "err", err)
	default:
		m.log.Info("domain restarted after a crash", "name", nd.Name, "old", d.ID, "new", nd.ID)
	}
}

// setCrashed marks a domain crashed, retrying for a while: it is released
// (@releaseDomain fires, its home goes) and stays listed.
func (m *Manager) setCrashed(id uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.commitCrashed(ctx, id); err != nil {
		m.log.Error("domain: cannot mark it crashed in the directory", "dom", id, "err", err)
	}
}

func (m *Manager) commitCrashed(ctx context.Context, id uint32) error {
	_, resp, err := m.cfg.Committer.Commit(ctx, directory.DomainEntry(directory.DomainCmd{
		Op: directory.DomSetState, Domain: directory.Domain{ID: id, State: directory.StateCrashed, Updated: time.Now().UnixNano()},
	}))
	if err == nil && resp.Err != "" && resp.Err != directory.ErrNoSuchDom.Error() {
		err = errors.New(resp.Err)
	}
	return err
}

// Reconcile keeps the directory true to the domains this host runs,
// until ctx ends. It first waits until the replica has caught up with
// what this host had applied before it (re)started, then, at once and
// every reconcileEvery:
//
//   - a domain the directory says runs here, but no process of this
//     manager runs (it died with an earlier agent), is crashed, and
//   - a crashed domain of this host follows its on_crash: "restart" starts
//     it again here, "destroy" removes it;
//   - a process of this manager whose domain the directory has ended (its
//     host was declared dead while only cut off) is killed, as its peers
//     were told it is gone; then its on_crash is followed.
//
// The agent runs it in a goroutine of its own.
func (m *Manager) Reconcile(ctx context.Context) {
	if m.cfg.Replica.WaitCaughtUp(ctx) != nil {
		return
	}
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		m.reconcileOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) reconcileOnce(ctx context.Context) {
	applied := m.cfg.Replica.Applied()
	table := m.cfg.Replica.Domains()
	here := make(map[uint32]bool, len(table))
	var lost, crashed []directory.Domain
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	for _, d := range table {
		if d.Host != m.cfg.Host || d.Driver {
			continue
		}
		here[d.ID] = true
		r := m.running[d.ID]
		switch {
		case r != nil:
			if !d.Running() && !r.destroying && !r.fenced {
				m.log.Warn("domain ended by the directory while it ran here; killing it", "dom", d.ID, "name", d.Name, "state", d.State)
				r.fenced = true
				r.signal()
			}
		case m.starting[d.Name] != nil || m.releasing[d.ID]:
			// Being created or released right now.
		case d.Running():
			lost = append(lost, d)
		default:
			crashed = append(crashed, d)
		}
	}
	// Gone from the table while it ran (removed as its host's crashed
	// domain). One created a moment ago may not have reached this
	// replica yet: only one whose creation this replica has applied
	// counts.
	for id, r := range m.running {
		if !here[id] && r.created != 0 && applied >= r.created && !r.destroying && !r.fenced {
			m.log.Warn("domain removed from the directory while it ran here; killing it", "dom", id, "name", r.dom.Name)
			r.fenced = true
			r.signal()
		}
	}
	m.mu.Unlock()

	for _, d := range lost {
		m.log.Warn("domain no longer runs here (it ended with an earlier agent): crashed", "dom", d.ID, "name", d.Name)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.commitCrashed(cctx, d.ID)
		cancel()
		if err != nil {
			m.log.Warn("domain: cannot mark it crashed in the directory", "dom", d.ID, "err", err)
			continue
		}
		crashed = append(crashed, d)
	}
	for _, d := range crashed {
		m.followCrash(ctx, d)
	}
}

// followCrash follows the on_crash of a crashed domain of this host.
func (m *Manager) followCrash(ctx context.Context, d directory.Domain) {
	cfg, spec, err := configOf(d)
	if err != nil || cfg.OnCrash != OnCrashRestart {
		m.log.Info("crashed domain removed (on_crash = destroy)", "dom", d.ID, "name", d.Name)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := m.commitRemove(cctx, d.ID); err != nil {
			m.log.Warn("domain: cannot remove from the directory", "dom", d.ID, "err", err)
		}
		return
	}
	m.restart(ctx, d, cfg, spec)
}

// HostDown handles a host that membership declared dead; the leader calls
// it. Its running domains are marked crashed in one entry (released on
// every host: @releaseDomain fires, their homes go); then those whose
// on_crash is "destroy" are removed. Those to restart stay listed,
// crashed, until their host's agent comes back and starts them again
// (Reconcile); their names are free meanwhile. With nothing to do it
// commits nothing.
func (m *Manager) HostDown(ctx context.Context, host string) error {
	// The domains it runs now: one created there after this (the host
	// came back before the entry applied) is not the verdict's.
	var ids []uint32
	for _, d := range m.cfg.Replica.Domains() {
		if d.Host == host && d.Running() {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) > 0 {
		m.log.Warn("host is down; marking its domains crashed", "host", host, "domains", len(ids))
		_, resp, err := m.cfg.Committer.Commit(ctx, directory.DomainEntry(directory.DomainCmd{
			Op: directory.DomHostDown, IDs: ids, Domain: directory.Domain{Host: host, State: directory.StateCrashed, Updated: time.Now().UnixNano()}}))
		if err == nil && resp.Err != "" {
			err = errors.New(resp.Err)
		}
		if err != nil {
			return err
		}
	}
	var errs []error
	for _, d := range m.cfg.Replica.Domains() {
		if d.Host == host && !d.Running() && !d.Driver && !restartsOnCrash(d) {
			if err := m.commitRemove(ctx, d.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
