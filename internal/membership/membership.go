package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrShutdown is returned by calls after Shutdown.
var ErrShutdown = errors.New("membership: shut down")

// Membership is this host's view of the cluster.
type Membership struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	addr   string // our advertised gossip address
	events *eventQueue
	// keyring is memberlist's (nil without encryption); it locks itself.
	keyring *memberlist.Keyring

	stop     chan struct{} // closed by Shutdown
	stopLoop chan struct{} // closed by Leave or Shutdown: ends the reconnect loop
	loopOnce sync.Once
	downOnce sync.Once
	wg       sync.WaitGroup

	// mu guards the fields below. It is taken inside memberlist's node
	// lock (from delegate callbacks), so never call into memberlist while
	// holding it.
	mu       sync.Mutex
	meta     wireMeta // what we gossip
	metaEnc  []byte   // meta encoded
	members  map[string]*Member
	rc       *reconnector
	shutdown bool
	// conflicts maps a name to the other address a host claimed it from
	// while the member was still alive here; see NotifyLeave.
	conflicts map[string]string
}

// New starts gossip on cfg.BindAddr and returns a one-member cluster; call
// Join to contact others. The reconnect loop starts at once.
func New(cfg Config) (*Membership, error) {
	if err := ValidateConfig(&cfg); err != nil {
		return nil, err
	}
	m := &Membership{
		cfg:       cfg,
		log:       cfg.Logger.With("name", cfg.Name),
		events:    newEventQueue(),
		stop:      make(chan struct{}),
		stopLoop:  make(chan struct{}),
		members:   map[string]*Member{},
		conflicts: map[string]string{},
		meta:      wireMeta{Meta: cfg.Meta},
	}
	var err error
	if m.metaEnc, err = encodeMeta(m.meta); err != nil {
		return nil, err
	}

	stdlog := newStdLogger(m.log)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr},
		BindPort:  cfg.BindPort,
		Logger:    stdlog,
	})
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	port := nt.GetAutoBindPort()
	var tr memberlist.Transport = nt
	if cfg.Faults != nil {
		tr = newFaultTransport(nt, cfg.Faults)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.Transport = tr
	mc.BindAddr, mc.BindPort = cfg.BindAddr, port
	mc.AdvertiseAddr, mc.AdvertisePort = cfg.AdvertiseAddr, cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = port
	}
	mc.Logger = stdlog
	mc.ProbeInterval, mc.ProbeTimeout = cfg.ProbeInterval, cfg.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = cfg.SuspicionMult, cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	if cfg.EncryptKey != nil {
		kr, err := memberlist.NewKeyring(cfg.Keys, slices.Clone(cfg.EncryptKey))
		if err != nil {
			_ = tr.Shutdown()
			return nil, fmt.Errorf("membership: keyring: %w", err)
		}
		mc.Keyring, m.keyring = kr, kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	d := &delegate{m}
	mc.Delegate, mc.Events, mc.Alive, mc.Conflict = d, d, d, d

	// The reconnector needs our address before memberlist announces us.
	self := net.JoinHostPort(cfg.BindAddr, strconv.Itoa(port))
	if cfg.AdvertiseAddr != "" {
		self = net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(mc.AdvertisePort))
	}
	seeds := make([]string, len(cfg.Join))
	for i, j := range cfg.Join {
		seeds[i] = withPort(j, m.seedPort())
	}
	m.rc = newReconnector(seeds, self, cfg.ReconnectInterval, cfg.ReconnectMaxBackoff, cfg.ReconnectTimeout)

	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("membership: %w", err)
	}
	m.ml = ml
	ln := ml.LocalNode()
	m.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	m.mu.Lock()
	m.rc.self = m.addr
	m.mu.Unlock()

	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.events.run(m.stop) }()
	go func() { defer m.wg.Done(); m.reconnectLoop() }()
	return m, nil
}

func (m *Membership) seedPort() int {
	if m.cfg.BindPort != 0 {
		return m.cfg.BindPort
	}
	return DefaultPort
}

// LocalName returns this host's name.
func (m *Membership) LocalName() string { return m.cfg.Name }

// Addr returns the gossip address others reach us at, "IP:PORT".
func (m *Membership) Addr() string { return m.addr }

// Join contacts the given hosts ("IP" or "IP:PORT") and merges state with
// them. It returns how many answered; the error is nil if any did.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.isShutdown() {
		return 0, ErrShutdown
	}
	full := make([]string, len(addrs))
	for i, a := range addrs {
		full[i] = withPort(a, m.seedPort())
	}
	n, err := m.ml.Join(full)
	if err != nil {
		return n, fmt.Errorf("membership: join %s: %w", strings.Join(full, ","), err)
	}
	return n, nil
}

// Members returns every member this host knows, sorted by name: alive
// ones, and failed or left ones until they are reaped. It includes us.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, *mem)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Events returns the channel of member changes, in the order this host saw
// them, our own included (we join at New and leave at Leave). The same channel is returned every time; it is closed by Shutdown.
// Read it promptly: if more than 16384 events queue up the oldest are
// dropped (Members stays exact).
func (m *Membership) Events() <-chan Event { return m.events.out }

// UpdateMeta changes what we gossip (free memory changed, say) and waits
// up to timeout for the change to go out to at least one member.
func (m *Membership) UpdateMeta(meta Meta, timeout time.Duration) error {
	if m.isShutdown() {
		return ErrShutdown
	}
	m.mu.Lock()
	wm := m.meta
	wm.Meta = meta
	enc, err := encodeMeta(wm)
	if err == nil {
		m.meta, m.metaEnc = wm, enc
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.ml.UpdateNode(timeout)
}

// Leave tells the cluster we are going, so that peers record us as left
// rather than failed, and stops the reconnect loop. It waits up to timeout
// for the news to go out. Gossip keeps running until Shutdown.
func (m *Membership) Leave(timeout time.Duration) error {
	if m.isShutdown() {
		return ErrShutdown
	}
	m.loopOnce.Do(func() { close(m.stopLoop) })
	deadline := time.Now().Add(timeout)
	m.mu.Lock()
	m.meta.Leaving = true
	m.metaEnc, _ = encodeMeta(m.meta) // validated with Leaving in ValidateConfig
	m.mu.Unlock()
	// Leave even if the flag did not go out: peers then record a failure.
	err := m.ml.UpdateNode(time.Until(deadline))
	if lerr := m.ml.Leave(time.Until(deadline)); lerr != nil {
		err = errors.Join(err, lerr)
	}
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip without telling anyone (peers will see us fail,
// unless we called Leave first) and closes the Events channel. It may wait
// up to TCPTimeout for a reconnect attempt in flight.
func (m *Membership) Shutdown() error {
	var err error
	m.downOnce.Do(func() {
		m.mu.Lock()
		m.shutdown = true
		m.mu.Unlock()
		m.loopOnce.Do(func() { close(m.stopLoop) })
		err = m.ml.Shutdown()
		close(m.stop)
		m.wg.Wait()
	})
	return err
}

func (m *Membership) isShutdown() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdown
}

// reconnectLoop periodically joins the targets the reconnector says are
// due, and reaps members lost longer than ReconnectTimeout.
func (m *Membership) reconnectLoop() {
	t := time.NewTicker(m.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stopLoop:
			return
		case <-t.C:
		}
		now := time.Now()
		m.mu.Lock()
		due := m.rc.due(now)
		m.reapLocked(now)
		m.mu.Unlock()
		for _, addr := range due {
			select {
			case <-m.stopLoop:
				return
			default:
			}
			n, err := m.ml.Join([]string{addr})
			m.log.Debug("membership: reconnect", "addr", addr, "ok", n > 0, "err", err)
			m.mu.Lock()
			m.rc.tried(addr, time.Now())
			m.mu.Unlock()
		}
	}
}

// reapLocked forgets members failed or left longer than ReconnectTimeout.
// Preconditions: m.mu is held.
func (m *Membership) reapLocked(now time.Time) {
	for name, mem := range m.members {
		if mem.State != StateAlive && now.Sub(mem.StateChange) > m.cfg.ReconnectTimeout {
			delete(m.members, name)
			m.events.push(Event{Type: EventReap, Member: *mem})
		}
	}
}

// delegate receives memberlist's callbacks. They may run on several
// goroutines, but memberlist calls the event ones under its node lock, one
// at a time, so their order is the order of changes.
type delegate struct{ m *Membership }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta implements memberlist.Delegate.NodeMeta.
func (d *delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	return slices.Clone(d.m.metaEnc) // ValidateConfig and UpdateMeta keep it within limit
}

// NotifyMsg implements memberlist.Delegate.NotifyMsg. We send no user
// messages.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.GetBroadcasts.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.LocalState.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.MergeRemoteState.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyAlive implements memberlist.AliveDelegate.NotifyAlive: a host whose
// meta does not decode is not let in.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if _, err := decodeMeta(n.Meta); err != nil {
		d.m.log.Warn("membership: refusing host with bad meta", "host", n.Name, "addr", n.Address(), "err", err)
		return err
	}
	return nil
}

// NotifyConflict implements memberlist.ConflictDelegate.NotifyConflict:
// a host claims the name of a member we hold at another address. If that
// member is dead, the host is taken back once DeadNodeReclaimTime has
// passed; make sure we contact it then, rather than wait for a push/pull.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.members[existing.Name]
	if old == nil || old.State == StateAlive {
		// Either two live hosts share a name, or the host restarted at a
		// new address before we saw the old one fail: remember it, and
		// NotifyLeave schedules the join when the old one fails.
		m.log.Warn("membership: two hosts claim one name", "host", existing.Name, "addr", existing.Address(), "other", other.Address())
		if existing.Name != m.cfg.Name {
			m.conflicts[existing.Name] = other.Address()
		}
		return
	}
	m.rc.conflict(other.Name, other.Address(), m.reclaimAt(old.StateChange), time.Now())
}

// reclaimAt is when a member lost at lostAt may be replaced at another
// address, with one reconnect interval to spare.
func (m *Membership) reclaimAt(lostAt time.Time) time.Time {
	return lostAt.Add(m.cfg.DeadNodeReclaimTime + m.cfg.ReconnectInterval)
}

// NotifyJoin implements memberlist.EventDelegate.NotifyJoin.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m := d.m
	mem, _ := memberFrom(n, StateAlive, time.Now())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.Name] = &mem
	delete(m.conflicts, mem.Name)
	m.rc.found(mem.Name, mem.Addr)
	m.events.push(Event{Type: EventJoin, Member: mem})
}

// NotifyUpdate implements memberlist.EventDelegate.NotifyUpdate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m := d.m
	mem, _ := memberFrom(n, StateAlive, time.Now())
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.members[mem.Name]; old != nil {
		if old.Meta == mem.Meta && old.Addr == mem.Addr && old.State == StateAlive {
			return // only the leaving flag changed
		}
		if old.State == StateAlive {
			mem.StateChange = old.StateChange
		}
	}
	m.members[mem.Name] = &mem
	m.rc.found(mem.Name, mem.Addr)
	m.events.push(Event{Type: EventUpdate, Member: mem})
}

// NotifyLeave implements memberlist.EventDelegate.NotifyLeave, which
// memberlist calls both for a host that failed and one that left; the
// leaving flag in its last meta tells them apart.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	mem, leaving := memberFrom(n, StateFailed, time.Now())
	typ := EventFailed
	if leaving {
		mem.State, typ = StateLeft, EventLeft
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.Name] = &mem
	if mem.Name != m.cfg.Name {
		m.rc.lost(mem.Name, mem.Addr, mem.StateChange)
		if addr, ok := m.conflicts[mem.Name]; ok {
			delete(m.conflicts, mem.Name)
			m.rc.conflict(mem.Name, addr, m.reclaimAt(mem.StateChange), mem.StateChange)
		}
	}
	m.events.push(Event{Type: typ, Member: mem})
}
