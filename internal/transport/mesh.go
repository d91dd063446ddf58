package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"shi/internal/faultnet"
	"shi/internal/tlsconf"
)

// Config is what a Mesh needs. Name, Listener, Resolve and Handle are
// required.
type Config struct {
	// Name is this host's name, 1 to MaxName bytes. Peers know us by it.
	Name string
	// Listener is the data address. The mesh owns it from a successful
	// New and closes it in Close; if New fails it is left to the caller.
	Listener net.Listener
	// Key is the cluster key; nil means no authentication (the hosts
	// trust their network). All hosts must agree.
	Key []byte
	// Resolve returns the data address ("IP:PORT") of a host, from
	// membership. It is called on writer goroutines and by DialLink, with
	// no lock of the mesh held.
	Resolve func(host string) (addr string, ok bool)
	// Handle receives each inbound message. It is called on the reader
	// goroutine of from's connection, one message at a time per host, so
	// messages from one host arrive in the order they were sent. m.Data
	// is only valid during the call. Handle may call Send and Forget, but
	// not Close; while it runs, further messages from from wait.
	Handle func(from string, m Msg)
	// Link receives an inbound link after its handshake, on a goroutine of
	// its own. A nil error means accepted: Link now owns c. An error
	// refuses the link: the dialer gets its syscall.Errno (ECONNREFUSED if
	// it is not one), the mesh closes c, and Link must not have used it.
	// Nil refuses every link.
	Link func(from string, hello []byte, c net.Conn) error
	// TLS, when set, runs every connection, control or link, over mutual
	// TLS: plaintext is refused, and each end's certificate must name the
	// member at its address (tlsconf.Check); an accepted connection's
	// claimed name must be its certificate's. nil: plain TCP.
	TLS *tlsconf.Config
	// Faults is the test-only fault hook (delay, cut); nil in production.
	Faults *faultnet.Faults
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// tunables are the mesh's timings and limits. New uses defaultTunables;
// tests shorten them.
type tunables struct {
	handshakeTimeout time.Duration // bounds a dial plus its handshake (and a link's hello)
	backoffMin       time.Duration // first wait after a failed connect
	backoffMax       time.Duration // the wait doubles up to this
	giveUp           time.Duration // unreachable this long with frames queued: drop them
	writeTimeout     time.Duration // a batch not written by then breaks the connection
	maxQueue         int           // bytes queued per host beyond the batch being written
}

var defaultTunables = tunables{
	handshakeTimeout: 10 * time.Second,
	backoffMin:       20 * time.Millisecond,
	backoffMax:       time.Second,
	// Membership declares a dead host within seconds and the hypervisor
	// then calls Forget; giving up is for names membership never knew.
	giveUp:       30 * time.Second,
	writeTimeout: 30 * time.Second,
	maxQueue:     64 << 20,
}

// Errors of Send and DialLink.
var (
	ErrQueueFull = errors.New("transport: send queue full")
	ErrClosed    = errors.New("transport: mesh closed")
)

// Mesh connects this host's agent to the others. See the package comment
// for its goroutines, lock order and guarantees.
type Mesh struct {
	cfg    Config
	tun    tunables
	log    *slog.Logger
	ln     net.Listener
	dial   faultnet.DialFunc
	stream stream
	ctx    context.Context // done when Close starts
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the mesh starts
	stats  counters

	// mu guards every field below it. Lock order: a host's deliverMu,
	// then mu, then a peer's mu. Nothing blocks while holding it: no I/O,
	// no callback, no wait. Goroutines are added to wg only under mu and
	// only while !closed, so Close's wg.Wait sees all of them.
	mu      sync.Mutex
	closed  bool
	peers   map[string]*peer      // outbound queue and writer per host
	inbound map[string]*inHost    // accepted control connections, by dialer name
	conns   map[net.Conn]struct{} // accepted connections the mesh still owns
	relays  map[*relay]struct{}   // LinkFile relays, ended by Close
}

// New starts a mesh: its accept loop runs until Close.
func New(cfg Config) (*Mesh, error) { return newMesh(cfg, defaultTunables) }

func newMesh(cfg Config, tun tunables) (*Mesh, error) {
	switch {
	case len(cfg.Name) == 0 || len(cfg.Name) > MaxName:
		return nil, fmt.Errorf("transport: host name of %d bytes (want 1 to %d)", len(cfg.Name), MaxName)
	case cfg.Listener == nil:
		return nil, errors.New("transport: no Listener")
	case cfg.Resolve == nil:
		return nil, errors.New("transport: no Resolve")
	case cfg.Handle == nil:
		return nil, errors.New("transport: no Handle")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mesh{
		cfg:     cfg,
		tun:     tun,
		log:     log,
		ln:      cfg.Faults.Listener(cfg.Listener),
		dial:    cfg.Faults.Dial((&net.Dialer{}).DialContext),
		stream:  plainStream,
		ctx:     ctx,
		cancel:  cancel,
		peers:   map[string]*peer{},
		inbound: map[string]*inHost{},
		conns:   map[net.Conn]struct{}{},
		relays:  map[*relay]struct{}{},
	}
	if cfg.TLS != nil {
		m.stream = m.tlsStream
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr returns the listener's address.
func (m *Mesh) Addr() net.Addr { return m.ln.Addr() }

// Forget drops everything about host, which is dead: its send queue (the
// frames are counted as QueueDrops) and its connections both ways. A later
// Send to host starts afresh with a new dial. Messages from host are not
// delivered after Forget returns, except one whose Handle call is in
// progress. Links are not touched: their owners close them.
func (m *Mesh) Forget(host string) {
	m.mu.Lock()
	p := m.peers[host]
	delete(m.peers, host)
	var closing []net.Conn
	if h := m.inbound[host]; h != nil {
		// h stays in the map until its readers exit, so that a new
		// connection from host shares its deliverMu with them.
		for ic := range h.conns {
			ic.stopped.Store(true)
			closing = append(closing, ic.c)
		}
	}
	m.mu.Unlock()
	if p != nil {
		m.stats.queueDrops.Add(uint64(p.stop()))
	}
	for _, c := range closing {
		c.Close()
	}
}

// Close stops the mesh: it closes the listener, every connection the mesh
// owns and every LinkFile relay, drops what is queued, and waits for its
// goroutines, including Handle and Link calls in progress (so neither may
// call Close). Links already handed over are their owners' to close.
func (m *Mesh) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var peers []*peer
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.peers = map[string]*peer{}
	var conns []net.Conn
	for c := range m.conns {
		conns = append(conns, c)
	}
	for _, h := range m.inbound {
		for ic := range h.conns {
			ic.stopped.Store(true)
		}
	}
	var relays []*relay
	for r := range m.relays {
		relays = append(relays, r)
	}
	m.mu.Unlock()

	m.cancel()
	err := m.ln.Close()
	for _, p := range peers {
		m.stats.queueDrops.Add(uint64(p.stop()))
	}
	for _, c := range conns {
		c.Close()
	}
	for _, r := range relays {
		r.close()
	}
	m.wg.Wait()
	return err
}

// Stats are plain counters since New, for the agent to export.
type Stats struct {
	FramesSent     uint64 // frames written to connections
	BytesSent      uint64 // their bytes, length prefixes included
	FramesReceived uint64 // frames read from accepted connections
	BytesReceived  uint64
	// Writes counts the writers' vectored writes; FramesSent/Writes is how
	// many frames shared a write.
	Writes uint64
	// Dials counts connection attempts, control and link.
	Dials uint64
	// Reconnects counts control connections made to a host after an
	// earlier one to it ended.
	Reconnects uint64
	// AuthFailures counts handshakes that failed on a MAC, as dialer or
	// acceptor.
	AuthFailures uint64
	// Malformed counts accepted connections closed for malformed input: a
	// bad preface or name, a bad hello, a bad frame.
	Malformed uint64
	// QueueDrops counts frames not delivered for the mesh's own reasons:
	// refused by a full queue, dropped by Forget, Close or giving up on an
	// unreachable host, or in a write that failed.
	QueueDrops uint64
}

type counters struct {
	framesSent, bytesSent, framesReceived, bytesReceived atomic.Uint64
	writes, dials, reconnects, authFailures, malformed   atomic.Uint64
	queueDrops                                           atomic.Uint64
}

// Stats returns the counters.
func (m *Mesh) Stats() Stats {
	s := &m.stats
	return Stats{
		FramesSent: s.framesSent.Load(), BytesSent: s.bytesSent.Load(),
		FramesReceived: s.framesReceived.Load(), BytesReceived: s.bytesReceived.Load(),
		Writes: s.writes.Load(), Dials: s.dials.Load(), Reconnects: s.reconnects.Load(),
		AuthFailures: s.authFailures.Load(), Malformed: s.malformed.Load(),
		QueueDrops: s.queueDrops.Load(),
	}
}

// setNoDelay sets TCP_NODELAY where c is a bare TCP connection. Go sets it
// on every TCP connection already; this says that we depend on it (small
// frames must not wait for Nagle). A faultnet wrapper hides the socket,
// but the socket underneath has Go's default.
func setNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
