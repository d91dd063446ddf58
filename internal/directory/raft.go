package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"shi/internal/faultnet"
	"shi/internal/tlsconf"
)

// NodeConfig configures a Raft member of the directory.
type NodeConfig struct {
	// ID is the server's Raft ID: the host name.
	ID string
	// DataDir holds the log, the stable store and snapshots. Empty keeps
	// everything in memory (tests).
	DataDir string
	// BindAddr is the Raft listen address (IP:PORT).
	BindAddr string
	// AdvertiseAddr is the address peers dial; default BindAddr.
	AdvertiseAddr string
	// Faults, when set, wraps the transport (tests only).
	Faults *faultnet.Faults
	// TLS, when set, runs Raft over mutual TLS: a TLS stream layer under
	// raft's NetworkTransport, refusing plaintext and peers whose
	// certificate does not name the member at their address.
	TLS *tlsconf.Config
	// Logger receives Raft's logs.
	Logger *slog.Logger

	// Timing. Zero values take Raft's defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
}

// Node is this host's Raft server, applying committed entries to a
// Replica.
type Node struct {
	cfg     NodeConfig
	r       *raft.Raft
	replica *Replica
	logs    raft.LogStore
	trans   *raft.NetworkTransport
	close   []func() error
	stop    chan struct{}

	// Leadership terms as this server sees them: termGen counts changes;
	// readyGen is the termGen in which this server, as leader, has applied
	// everything committed before its term (a barrier). Linearizable reads
	// are served only then.
	termGen, readyGen atomic.Uint64

	nudging atomic.Bool // a nudge entry is in flight
}

// NewNode starts a Raft server for replica. It restores the replica from
// the latest snapshot and log on disk, if any.
func NewNode(cfg NodeConfig, replica *Replica) (*Node, error) {
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = cfg.BindAddr
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hclogAdapter(cfg.Logger)
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.CommitTimeout
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	n := &Node{cfg: cfg, replica: replica, stop: make(chan struct{})}
	fsm := &raftFSM{r: replica, log: cfg.Logger}
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.DataDir == "" {
		s := raft.NewInmemStore()
		logs, stable, snaps = s, s, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		bs, err := openLogStore(filepath.Join(cfg.DataDir, "log.db"))
		if err != nil {
			return nil, fmt.Errorf("raft log store: %w", err)
		}
		n.close = append(n.close, bs.Close)
		mark, floor, err := openAppliedMark(filepath.Join(cfg.DataDir, "applied"))
		if err != nil {
			n.shutdownStores()
			return nil, fmt.Errorf("applied mark: %w", err)
		}
		n.close = append(n.close, mark.Close)
		fsm.mark = mark
		// Not caught up until everything applied before a restart is
		// applied again; the XenStore backend waits for it.
		replica.SetFloor(floor)
		fs, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, rc.Logger)
		if err != nil {
			n.shutdownStores()
			return nil, fmt.Errorf("raft snapshot store: %w", err)
		}
		logs, stable, snaps = bs, bs, fs
	}
	sl, err := newStreamLayer(cfg.BindAddr, cfg.AdvertiseAddr, cfg.Faults, cfg.TLS)
	if err != nil {
		n.shutdownStores()
		return nil, err
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  sl,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  rc.Logger,
	})
	r, err := raft.NewRaft(rc, fsm, logs, stable, snaps, n.trans)
	if err != nil {
		n.trans.Close()
		n.shutdownStores()
		return nil, err
	}
	n.r = r
	n.logs = logs
	// NewRaft restored the latest snapshot; the entries after it that
	// this host had applied are committed, so apply them again from our
	// own log now rather than when a leader next says so.
	n.reapply(logs)
	go n.watchLeadership(notify)
	return n, nil
}

// watchLeadership tracks terms; on becoming leader it issues a barrier and
// then marks the term ready for reads.
func (n *Node) watchLeadership(notify <-chan bool) {
	for {
		select {
		case <-n.stop:
			return
		case leader := <-notify:
			g := n.termGen.Add(1)
			if leader {
				go func() {
					if n.r.Barrier(0).Error() == nil && n.termGen.Load() == g {
						n.readyGen.Store(g)
					}
				}()
			}
		}
	}
}

// Ready reports whether this server leads and has applied everything
// committed before its term.
func (n *Node) Ready() bool {
	return n.r.State() == raft.Leader && n.readyGen.Load() == n.termGen.Load()
}

func (n *Node) shutdownStores() {
	for _, f := range n.close {
		f()
	}
}

// Shutdown stops the server.
func (n *Node) Shutdown() error {
	err := n.r.Shutdown().Error()
	close(n.stop)
	n.trans.Close()
	n.shutdownStores()
	return err
}

// Server is one member of the Raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// HasState reports whether this server already belongs to a cluster
// (it has a configuration), so it must not bootstrap.
func (n *Node) HasState() bool {
	f := n.r.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Bootstrap starts a new cluster with the given voters. Every initial
// voter calls it with the same list.
func (n *Node) Bootstrap(voters []Server) error {
	var c raft.Configuration
	for _, s := range voters {
		c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address), Suffrage: raft.Voter})
	}
	err := n.r.BootstrapCluster(c).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// Configuration lists the servers of the cluster.
func (n *Node) Configuration() ([]Server, error) {
	f := n.r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// IsLeader reports whether this server leads.
func (n *Node) IsLeader() bool { return n.r.State() == raft.Leader }

// Role is "leader", "follower", "candidate" or "shutdown".
func (n *Node) Role() string { return strings.ToLower(n.r.State().String()) }

// Leader returns the leader's ID, or "" if none is known.
func (n *Node) Leader() string {
	_, id := n.r.LeaderWithID()
	return string(id)
}

// LeaderCh signals leadership changes of this server.
func (n *Node) LeaderCh() <-chan bool { return n.r.LeaderCh() }

// ErrNotLeader is returned by leader-only calls on a follower; the entry
// was not logged and may be sent to the leader.
var ErrNotLeader = errors.New("directory: not the leader")

// ErrIndeterminate means an entry was handed to the log but its fate is
// unknown (leadership was lost, or the connection to the leader broke):
// it may or may not be applied. It is not retried.
var ErrIndeterminate = errors.New("directory: outcome unknown")

// Apply commits an entry; it must be called on the leader.
func (n *Node) Apply(ctx context.Context, entry []byte) (uint64, Response, error) {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := n.r.Apply(entry, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
			// Never entered the log: safe to send elsewhere.
			return 0, Response{}, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			return 0, Response{}, fmt.Errorf("%w: %v", ErrIndeterminate, err)
		}
		return 0, Response{}, err
	}
	resp, _ := f.Response().(Response)
	return f.Index(), resp, nil
}

// ReadIndex returns an index that covers every change committed before
// the call: a replica that has applied it may answer a linearizable read.
// It is the last of our entries up to this leader's commit index, taken
// after the term's barrier (so every change an earlier leader committed
// is in) and confirmed by a quorum still following this leader (so no
// newer leader has committed anything). Not this leader's applied index:
// a follower may apply an entry before the leader does, and a read there
// must not be followed by an older answer here.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	g := n.termGen.Load()
	if n.r.State() != raft.Leader || n.readyGen.Load() != g {
		return 0, ErrNotLeader
	}
	commit := n.r.CommitIndex()
	errc := make(chan error, 1)
	go func() { errc <- n.r.VerifyLeader().Error() }()
	select {
	case err := <-errc:
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if n.termGen.Load() != g {
		return 0, ErrNotLeader
	}
	return n.lastCommand(commit), nil
}

// lastCommand is the index of the last of our entries at or before index:
// Replica.Applied counts only those, never Raft's own (an election's no-op,
// barriers, configurations).
func (n *Node) lastCommand(index uint64) uint64 {
	var l raft.Log
	for i := index; i > 0; i-- {
		if err := n.logs.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) {
			// Compacted: entry i and all before it are in a snapshot this
			// leader took of its own replica, which has applied them.
			return n.replica.Applied()
		} else if err != nil {
			// Unreadable: wait for all of it (a read that cannot be
			// sure times out with EAGAIN rather than answer early).
			return index
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// Nudge makes followers learn the current commit index now rather than
// at the next append (Raft's CommitTimeout): it proposes a no-op entry,
// whose append carries the commit index. At most one is in flight. The
// leader calls it after committing an entry a follower forwarded, because
// that follower's next read waits until it has applied the entry.
func (n *Node) Nudge() {
	if !n.nudging.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.nudging.Store(false)
		n.r.Apply(NoopEntry(), time.Second).Error()
	}()
}

// Barrier waits until every entry committed before it is applied here.
func (n *Node) Barrier(timeout time.Duration) error { return n.r.Barrier(timeout).Error() }

// AddVoter adds (or promotes) a voter.
func (n *Node) AddVoter(id, addr string) error {
	return n.r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
}

// AddNonvoter adds a server that replicates but does not vote.
func (n *Node) AddNonvoter(id, addr string) error {
	return n.r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
}

// RemoveServer removes a server from the configuration.
func (n *Node) RemoveServer(id string) error {
	return n.r.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
}

// Stats returns Raft's counters.
func (n *Node) Stats() map[string]string { return n.r.Stats() }

// reapply applies, from this host's own log, the entries after the
// restored snapshot up to the replica's floor (what it had applied before
// the restart). Raft may apply the same entries meanwhile; the replica
// applies each index once. If an entry is missing, the rest comes from the
// leader, and until then the XenStore backend answers EAGAIN.
func (n *Node) reapply(logs raft.LogStore) {
	floor := n.replica.Floor()
	for i := n.replica.Applied() + 1; i <= floor; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			if n.cfg.Logger != nil {
				n.cfg.Logger.Warn("directory: cannot apply again an entry this host had applied; waiting for the leader", "index", i, "floor", floor, "err", err)
			}
			return
		}
		if l.Type == raft.LogCommand {
			n.replica.ApplyEntry(l.Index, l.Data)
		}
	}
}

// raftFSM adapts a Replica to raft.FSM (raft.BatchingFSM).
type raftFSM struct {
	r    *Replica
	mark *appliedMark // nil: state in memory only
	log  *slog.Logger
}

var _ raft.BatchingFSM = (*raftFSM)(nil)

// Apply implements raft.FSM.Apply (unused: raft calls ApplyBatch).
func (f *raftFSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM.ApplyBatch. The applied mark is
// raised past the batch before any of it is applied, so that no client
// ever sees a state a restart would go back behind.
func (f *raftFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	var last uint64
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			last = l.Index
		}
	}
	if last == 0 {
		return out // configuration changes only: nothing for the replica
	}
	if f.mark != nil {
		if err := f.mark.raise(last); err != nil && f.log != nil {
			// The state is still right; only a restart could come back
			// behind it.
			f.log.Error("directory: cannot record the applied index on disk", "index", last, "err", err)
		}
	}
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = f.r.ApplyEntry(l.Index, l.Data)
		}
	}
	return out
}

func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) { return snapshotSink{f.r.Snapshot()}, nil }

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	m, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.r.Restore(m)
	return nil
}

type snapshotSink struct{ s Snapshot }

func (s snapshotSink) Persist(sink raft.SnapshotSink) error {
	if err := s.s.Persist(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshotSink) Release() {}

// streamLayer is Raft's TCP transport, with the test fault hook, and
// mutual TLS when tls is set.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	faults    *faultnet.Faults
	tls       *tlsconf.Config
}

func newStreamLayer(bind, advertise string, f *faultnet.Faults, tc *tlsconf.Config) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address: %w", err)
	}
	if adv.Port == 0 {
		adv = ln.Addr().(*net.TCPAddr)
	}
	if f != nil {
		ln = f.Listener(ln)
	}
	return &streamLayer{Listener: ln, advertise: adv, faults: f, tls: tc}, nil
}

// Accept implements raft.StreamLayer. A TLS connection's handshake runs
// on its first read, in the transport's goroutine for that connection,
// so a slow or hostile peer never holds up the accept loop; a failed one
// ends that connection only.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil || s.tls == nil {
		return c, err
	}
	return tls.Server(c, s.tls.Server()), nil
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := func(a string, t time.Duration) (net.Conn, error) {
		if s.tls == nil {
			return net.DialTimeout("tcp", a, t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), t)
		defer cancel()
		return s.tls.DialContext(ctx, &net.Dialer{}, a, "")
	}
	if s.faults != nil {
		return s.faults.DialTimeout(d)(string(addr), timeout)
	}
	return d(string(addr), timeout)
}

// Addr is the address peers reach this server at.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// hclogAdapter sends Raft's hclog output to slog.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Info,
		Output: slogWriter{l},
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "[ERROR]"):
		w.l.Error(msg)
	case strings.Contains(msg, "[WARN]"):
		w.l.Warn(msg)
	default:
		w.l.Info(msg)
	}
	return len(p), nil
}
