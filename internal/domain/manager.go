package domain

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"shi/internal/abi"
	"shi/internal/cgroup"
	"shi/internal/directory"
	"shi/internal/hypervisor"
)

// Environment of a domain process.
const (
	EnvXenstore = "XENSTORED_PATH" // the XenStore socket
	EnvAgent    = "SHI_AGENT"      // the agent's API URL
	EnvDomID    = "SHI_DOMID"      // its domain id
	EnvFD       = "SHI_DOMAIN_FD"  // its agent connection (always 3)
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Host is this host's name, as the directory records it.
	Host      string
	Replica   *directory.Replica
	Committer directory.Committer
	Logger    *slog.Logger

	// XenstoreSocket and APIURL are exported to domains.
	XenstoreSocket string
	APIURL         string
	// XenLibs is the directory of the replacement Xen libraries
	// (scripts/build-libxen.sh) for domains with xen_libs = 1; "" refuses
	// them.
	XenLibs string

	// Hosts returns the cluster's hosts for placement (Reserved is filled
	// in from the domain table). Nil: this host alone, with the free
	// memory of /proc/meminfo.
	Hosts func() []Host
	// Output receives a domain's stdout and stderr; nil discards them.
	Output func(d directory.Domain) io.Writer
	// OnExit, if set, is told when a domain of this host has exited and
	// been released.
	OnExit func(d directory.Domain, st ExitStatus)
	// ConsoleHelper is the shi binary whose "console-helper" runs a
	// domain's program on a terminal joined to its console (console =
	// "pty"); "" runs programs directly, with no terminal.
	ConsoleHelper string
	// Hypervisor serves the domains' hypercalls; the agent builds it and
	// closes it after the manager.
	Hypervisor *hypervisor.Hypervisor
	// RestartLimit caps on_crash=restart at this many restarts of one
	// name per RestartWindow (default 5 per minute); past it the domain
	// stays destroyed.
	RestartLimit  int
	RestartWindow time.Duration
}

// Spec asks for a domain.
type Spec struct {
	Config string // xl-style config text
	Dir    string // relative cmd paths are taken from here
	Node   string // host to run on; "" lets placement choose
	// Avoid lists hosts placement must pass over: their agents did not
	// take this request when it was forwarded to them.
	Avoid []string
}

// ElsewhereError means the domain is (to be) on another host: the caller
// forwards the request to that host's agent.
type ElsewhereError struct{ Host string }

func (e *ElsewhereError) Error() string { return fmt.Sprintf("domain belongs on host %q", e.Host) }

var (
	// ErrNoSuchDomain means no domain has that id or name.
	ErrNoSuchDomain = errors.New("no such domain")
	// ErrNameInUse means a domain with that name exists.
	ErrNameInUse = errors.New("a domain with that name exists")
	// ErrClosed means the manager is shutting down.
	ErrClosed = errors.New("domain manager closed")
)

// ExitStatus is how a domain's process ended.
type ExitStatus struct {
	Code      int    // exit code, -1 if killed by a signal
	Signal    string // the signal that killed it, if any
	Destroyed bool   // it was destroyed (shi destroy, agent shutdown)
	OOM       bool   // it ran out of memory: the kernel killed a process of it
}

// Crashed reports whether the domain ended on its own with a failure.
func (s ExitStatus) Crashed() bool {
	return !s.Destroyed && (s.Code != 0 || s.Signal != "" || s.OOM)
}

func (s ExitStatus) String() string {
	switch {
	case s.Destroyed:
		return "destroyed"
	case s.OOM:
		return "out of memory"
	case s.Signal != "":
		return "killed by " + s.Signal
	}
	return "exit code " + strconv.Itoa(s.Code)
}

// running is a domain process of this host.
type running struct {
	dom    directory.Domain
	cfg    *Config
	spec   Spec
	pid    int
	exited chan struct{} // closed once it is fully released
	out    *outputTail   // the tail of its output
	outEOF chan struct{} // closed once its output pipe is drained
	group  *cgroup.Group // its cgroup; nil when uncontained

	// Guarded by Manager.mu.
	destroying bool   // shi destroy or agent shutdown: it ends on purpose
	fenced     bool   // killed because the directory had ended it (Reconcile)
	created    uint64 // the log index of its DomCreate, once known
}

// Manager runs this host's domains.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger
	hv  *hypervisor.Hypervisor

	// mu guards the fields below. Launching a process and recording it
	// happen under mu, and Identify reads under it, so a domain's socket
	// peer is never taken for an ordinary local process.
	mu        sync.RWMutex
	running   map[uint32]*running
	sessions  map[int]uint32           // session (leader pid) -> domid
	starting  map[string]chan struct{} // by name: closed once launched or failed
	releasing map[uint32]bool          // ended, not yet released: Reconcile leaves them be
	restarts  map[string][]time.Time
	ended     []ended // the latest domains of this host that ended, oldest first
	closed    bool

	wg sync.WaitGroup // exit watchers

	// The runtime directory of the domains' disk sockets (diskenv_linux.go).
	runOnce sync.Once
	run     string
	runErr  error

	// The domains' cgroups (contain_linux.go); cg is nil when domains
	// run uncontained.
	cgOnce sync.Once
	cg     *cgroup.Host
}

// NewManager returns a manager with no domains.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Host == "" || cfg.Replica == nil || cfg.Committer == nil || cfg.Hypervisor == nil {
		return nil, errors.New("domain: ManagerConfig needs Host, Replica, Committer and Hypervisor")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RestartLimit <= 0 {
		cfg.RestartLimit = 5
	}
	if cfg.RestartWindow <= 0 {
		cfg.RestartWindow = time.Minute
	}
	m := &Manager{
		cfg:       cfg,
		log:       cfg.Logger,
		running:   map[uint32]*running{},
		sessions:  map[int]uint32{},
		starting:  map[string]chan struct{}{},
		releasing: map[uint32]bool{},
		restarts:  map[string][]time.Time{},
		hv:        cfg.Hypervisor,
	}
	if err := socketReachable(cfg.XenstoreSocket); err != nil {
		m.log.Warn("domains cannot start on this host until the XenStore socket is reachable: shi create will refuse them", "err", err)
	}
	return m, nil
}

// Host is the name of this manager's host.
func (m *Manager) Host() string { return m.cfg.Host }

// List returns every domain of the cluster, from the directory, but for
// the hosts' driver domains (the agents' own).
func (m *Manager) List() []directory.Domain {
	return slices.DeleteFunc(m.cfg.Replica.Domains(), func(d directory.Domain) bool { return d.Driver })
}

// Lookup finds a domain by decimal id or by name.
func (m *Manager) Lookup(ref string) (directory.Domain, bool) {
	if id, err := strconv.ParseUint(ref, 10, 32); err == nil {
		return m.cfg.Replica.Domain(uint32(id))
	}
	for _, d := range m.cfg.Replica.Domains() {
		if d.Name == ref {
			return d, true
		}
	}
	return directory.Domain{}, false
}

// hosts gathers placement's view of the cluster, marking the hosts to
// avoid unreachable.
func (m *Manager) hosts(avoid []string) []Host {
	var hs []Host
	if m.cfg.Hosts != nil {
		hs = m.cfg.Hosts()
	} else {
		hs = []Host{{Name: m.cfg.Host, Alive: true, MemFree: memAvailable()}}
	}
	reserved := map[string]uint64{}
	for _, d := range m.cfg.Replica.Domains() {
		if d.Running() {
			reserved[d.Host] += d.MemoryMiB << 20
		}
	}
	for i := range hs {
		hs[i].Reserved = reserved[hs[i].Name]
		hs[i].Unreachable = slices.Contains(avoid, hs[i].Name)
	}
	return hs
}

// Create starts a domain. If placement chooses another host it returns
// *ElsewhereError and the caller forwards the spec there, with Node set.
func (m *Manager) Create(ctx context.Context, spec Spec) (directory.Domain, error) {
	cfg, err := ParseConfig(spec.Config)
	if err != nil {
		return directory.Domain{}, err
	}
	host, err := Place(m.hosts(spec.Avoid), cfg.MemoryMiB, spec.Node)
	if err != nil {
		return directory.Domain{}, err
	}
	if host != m.cfg.Host {
		return directory.Domain{}, &ElsewhereError{Host: host}
	}
	return m.createHere(ctx, cfg, spec)
}

func (m *Manager) createHere(ctx context.Context, cfg *Config, spec Spec) (directory.Domain, error) {
	path, err := resolveCmd(cfg.Cmd, spec.Dir)
	if err != nil {
		return directory.Domain{}, err
	}
	// A domain that cannot reach XenStore fails in ways only the agent's
	// log explains; refuse it here, saying why. Checked at each create:
	// modes can change while the agent runs.
	if err := socketReachable(m.cfg.XenstoreSocket); err != nil {
		return directory.Domain{}, fmt.Errorf("domain %q: %w", cfg.Name, err)
	}
	if _, err := m.xenLibsEnv(cfg); err != nil {
		return directory.Domain{}, fmt.Errorf("domain %q: %w", cfg.Name, err)
	}
	if err := diskConflict(m.cfg.Replica, m.cfg.Host, cfg); err != nil {
		return directory.Domain{}, fmt.Errorf("domain %q: %w", cfg.Name, err)
	}
	// A Destroy that finds the domain in the directory before its
	// process is recorded waits for this.
	started := make(chan struct{})
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return directory.Domain{}, ErrClosed
	}
	if m.starting[cfg.Name] != nil {
		m.mu.Unlock()
		return directory.Domain{}, fmt.Errorf("%w: %q", ErrNameInUse, cfg.Name)
	}
	m.starting[cfg.Name] = started
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.starting, cfg.Name)
		m.mu.Unlock()
		close(started)
	}()
	uuid := cfg.UUID
	if uuid == "" {
		uuid = newUUID()
	}
	// The config and where relative paths start, so that a restart by a
	// later agent (Reconcile) starts the same thing.
	conf, _ := json.Marshal(storedConfig{Config: *cfg, Dir: spec.Dir})
	now := time.Now().UnixNano()
	idx, resp, err := m.cfg.Committer.Commit(ctx, directory.DomainEntry(directory.DomainCmd{
		Op: directory.DomCreate,
		Domain: directory.Domain{Name: cfg.Name, Host: m.cfg.Host, State: directory.StateRunning,
			MemoryMiB: cfg.MemoryMiB, UUID: uuid, Config: conf, Created: now, Updated: now},
		Reuse: true, // a crashed domain's name is free
	}))
	if err != nil {
		return directory.Domain{}, fmt.Errorf("domain %q: %w", cfg.Name, err)
	}
	if resp.Err != "" || resp.Domain == nil {
		if resp.Err == directory.ErrNameInUse.Error() {
			return directory.Domain{}, fmt.Errorf("%w: %q", ErrNameInUse, cfg.Name)
		}
		return directory.Domain{}, fmt.Errorf("domain %q: %s", cfg.Name, resp.Err)
	}
	d := *resp.Domain
	log := m.log.With("dom", d.ID, "name", d.Name)
	fail := func(err error) (directory.Domain, error) {
		m.hv.RemoveDomain(abi.DomID(d.ID))
		m.removeEntry(d.ID)
		return directory.Domain{}, fmt.Errorf("domain %q: %w", cfg.Name, err)
	}
	f, err := m.hv.AddDomain(abi.DomID(d.ID), hypervisor.DomainConfig{
		Name: d.Name, GrantFrames: cfg.GrantFrames, MaxPages: int(cfg.MemoryMiB << 20 / abi.PAGE_SIZE),
		MaxPorts: cfg.MaxEventChannels, MaxMaps: cfg.MaxMaps,
	})
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	console, err := m.writeKeys(ctx, d, cfg)
	if err != nil {
		return fail(err)
	}
	if err := m.launch(d, cfg, spec, path, f, console); err != nil {
		return fail(err)
	}
	m.mu.Lock()
	if r := m.running[d.ID]; r != nil {
		r.created = idx
	}
	m.mu.Unlock()
	log.Info("domain started", "cmd", path, "memory_mib", cfg.MemoryMiB)
	return d, nil
}

// resolveCmd finds the program: a path with a '/' is taken relative to
// dir; a bare name is looked up in PATH.
func resolveCmd(cmd, dir string) (string, error) {
	if !filepath.IsAbs(cmd) && filepath.Base(cmd) != cmd && dir != "" {
		cmd = filepath.Join(dir, cmd)
	}
	p, err := lookPath(cmd)
	if err != nil {
		return "", fmt.Errorf("cmd %q: %w", cmd, err)
	}
	return p, nil
}

// Destroy stops a domain of this host and waits until it is released and
// gone from the directory. A crashed (or dead) domain of any host is just
// removed. A running domain of another host gives *ElsewhereError.
func (m *Manager) Destroy(ctx context.Context, ref string) error {
	d, ok := m.Lookup(ref)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSuchDomain, ref)
	}
	if d.Host != m.cfg.Host {
		if !d.Running() {
			return m.commitRemove(ctx, d.ID)
		}
		return &ElsewhereError{Host: d.Host}
	}
	m.mu.Lock()
	r := m.running[d.ID]
	if r != nil {
		r.destroying = true
	}
	started := m.starting[d.Name]
	m.mu.Unlock()
	if r == nil && started != nil {
		select { // still being created: try again once it is
		case <-started:
			return m.Destroy(ctx, ref)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r == nil {
		// Not ours any more (it exited meanwhile, or a stale entry).
		m.hv.RemoveDomain(abi.DomID(d.ID))
		if _, still := m.cfg.Replica.Domain(d.ID); !still {
			return nil
		}
		return m.commitRemove(ctx, d.ID)
	}
	r.signal()
	select {
	case <-r.exited: // every process gone: exited reaped its cgroup
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// removeEntry removes a domain from the directory, retrying for a while:
// its XenStore home goes and @releaseDomain fires.
func (m *Manager) removeEntry(id uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.commitRemove(ctx, id); err != nil {
		m.log.Error("domain: cannot remove from the directory", "dom", id, "err", err)
	}
}

func (m *Manager) commitRemove(ctx context.Context, id uint32) error {
	idx, resp, err := m.cfg.Committer.Commit(ctx, directory.DomainEntry(directory.DomainCmd{
		Op: directory.DomRemove, Domain: directory.Domain{ID: id, Updated: time.Now().UnixNano()},
	}))
	if err != nil {
		return err
	}
	if resp.Err != "" && resp.Err != directory.ErrNoSuchDom.Error() {
		return errors.New(resp.Err)
	}
	// Applied here before a destroy returns: a create on this host
	// right after it (same name, same disk) must not find it still
	// there, as when the leader that committed it is another host.
	return m.cfg.Replica.WaitApplied(ctx, idx)
}

// Close destroys every domain of this host and waits until they are
// released. The hypervisor stays open (its owner closes it).
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, r := range m.running {
		r.destroying = true
		r.signal()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.closeCgroups()
	m.runOnce.Do(func() {}) // waits for a launch making it
	if m.run != "" {
		os.RemoveAll(m.run)
	}
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
