package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/abi"
	"shi/internal/evtchn"
	"shi/internal/gnttab"
	"shi/internal/hypercall"
	"shi/internal/ring"
	"shi/internal/shm"
	"shi/internal/transport"
)

// DomID is a domain id.
type DomID = abi.DomID

// Peers is the data plane to the hypervisors of other hosts (the agent
// backs it with internal/transport).
type Peers interface {
	// Send queues m for the hypervisor of host, whose Inbound receives
	// it; it never blocks. Messages to one host arrive in order.
	Send(host string, m *transport.Msg) error
	// Link opens a link to host, whose hypervisor takes it with
	// AcceptLink, and returns this end, to be handed to a local domain.
	// It blocks; the hypervisor calls it without holding its lock.
	Link(ctx context.Context, host string, hello []byte) (*os.File, error)
}

// Config configures a Hypervisor.
type Config struct {
	Logger *slog.Logger
	// Host is this host's name, as the other hosts know it.
	Host string
	// Peers reaches the other hosts; nil means there are none.
	Peers Peers
	// Locate finds domains on other hosts; nil means there are none.
	Locate evtchn.Locator
	// Timeout bounds how long a request waits for another host (default
	// 10 s).
	Timeout time.Duration
}

// DomainConfig sizes one domain's resources.
type DomainConfig struct {
	Name string // for log lines
	// GrantFrames is the size of its grant table in pages (default 4,
	// i.e. 2048 v1 entries).
	GrantFrames int
	// MaxPages caps the pages it may share (its memory); default 4096.
	MaxPages int
	// MaxPorts caps its event-channel ports; default 1023, xl's
	// max_event_channels.
	MaxPorts int
	// MaxMaps caps the grants it may map at once; default 1024.
	MaxMaps int
	// Privileged domains (a host's driver domain) may query and allocate
	// ports of other domains, on any host.
	Privileged bool
}

// Defaults of DomainConfig.
const (
	DefaultGrantFrames = 4
	DefaultMaxPages    = 4096
	DefaultMaxPorts    = 1023
	DefaultMaxMaps     = 1024
)

func (c *DomainConfig) setDefaults() {
	if c.GrantFrames <= 0 {
		c.GrantFrames = DefaultGrantFrames
	}
	if c.MaxPages <= 0 {
		c.MaxPages = DefaultMaxPages
	}
	if c.MaxPorts <= 0 {
		c.MaxPorts = DefaultMaxPorts
	}
	if c.MaxMaps <= 0 {
		c.MaxMaps = DefaultMaxMaps
	}
}

// inlineGFN is the frame number under which an inline copy's bytes are
// seen by the grant table; no real frame reaches it (MaxPages is smaller).
const inlineGFN = ^uint32(0)

// Hypervisor serves the domains of one host.
type Hypervisor struct {
	log     *slog.Logger
	host    string
	peers   Peers
	locate  evtchn.Locator
	timeout time.Duration
	stop    chan struct{} // closed by Close: ends the sweeper

	// mu guards everything below and every vdom's state. Lock order:
	// mu, then a vdom's outbox.mu; the Locator (the directory's replica)
	// is called under mu and must not call back.
	mu      sync.Mutex
	evt     *evtchn.Table
	gnt     *gnttab.Table
	doms    map[DomID]*vdom
	scratch []byte // an inline copy's page
	inline  DomID  // the domain whose inline copy runs, or DOMID_INVALID
	closed  bool
	pending map[uint64]*pending // requests waiting for another host, by id
	nextID  uint64
	links   map[linkKey]*link // links between local and remote domains
}

// New returns a hypervisor with no domains.
func New(cfg Config) *Hypervisor {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	h := &Hypervisor{
		log:     log,
		host:    cfg.Host,
		peers:   cfg.Peers,
		locate:  cfg.Locate,
		timeout: cfg.Timeout,
		stop:    make(chan struct{}),
		evt:     evtchn.New(cfg.Locate),
		doms:    map[DomID]*vdom{},
		scratch: ring.AlignedBytes(abi.PAGE_SIZE),
		inline:  abi.DOMID_INVALID,
		pending: map[uint64]*pending{},
		links:   map[linkKey]*link{},
	}
	h.gnt = gnttab.New((*frames)(h))
	go h.sweep()
	return h
}

// notify is an unmap notification (spec §3.4): clear the byte at off of
// the page and send on port. off == hypercall.NoNotify: no byte;
// port == hypercall.NoNotify: no event.
type notify struct{ off, port uint32 }

func (n notify) none() bool { return n.off == hypercall.NoNotify && n.port == hypercall.NoNotify }

// page is one shared page: the domain's sealed memfd and, once the agent
// has needed its bytes, a mapping of it.
type page struct {
	mfd     *shm.Memfd
	m       *shm.Mapping
	exposed bool // its memfd was handed to a mapper
}

func (p *page) close() {
	if p.m != nil {
		p.m.Unmap()
	}
	p.mfd.Close()
}

// vdom is a local domain's state. Guarded by Hypervisor.mu.
type vdom struct {
	id   DomID
	name string
	cfg  DomainConfig
	log  *slog.Logger

	table    *shm.Memfd
	tableMap *shm.Mapping
	ports    map[evtchn.Port]*shm.EventFD // the agent's copy of each port's eventfd
	pages    []*page                      // by frame number; nil = free
	npages   int
	maps     map[abi.GrantHandle]notify // notifications of its mappings
	shares   map[uint32]notify          // notifications of its shared pages
	// granterOff is, for its maps of grants of other hosts, the
	// granter's unmap notification byte, cleared in the replica if the
	// granter dies.
	granterOff map[abi.GrantHandle]uint32

	out  *outbox
	conn *net.UnixConn
	done chan struct{} // closed when its request loop has ended
	errs int           // failed or malformed requests, for log rate limiting
}

// AddDomain registers a new local domain and returns the domain's end of
// its agent connection (a blocking SOCK_SEQPACKET socket, close-on-exec),
// to be inherited by the domain process as SHI_DOMAIN_FD. The caller owns
// the file and should close it once the domain has it.
func (h *Hypervisor) AddDomain(id DomID, cfg DomainConfig) (*os.File, error) {
	cfg.setDefaults()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hypervisor: socketpair: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), fmt.Sprintf("dom%d-agent", id))
	conn, err := shm.FileConn(fds[0])
	if err != nil {
		theirs.Close()
		return nil, err
	}
	table, err := shm.NewMemfd(fmt.Sprintf("shi-gnttab-dom%d", id), cfg.GrantFrames*abi.PAGE_SIZE)
	if err != nil {
		conn.Close()
		theirs.Close()
		return nil, err
	}
	tm, err := table.Map(true)
	if err != nil {
		table.Close()
		conn.Close()
		theirs.Close()
		return nil, err
	}
	d := &vdom{
		id: id, name: cfg.Name, cfg: cfg,
		log:   h.log.With("dom", id, "name", cfg.Name),
		table: table, tableMap: tm,
		ports:  map[evtchn.Port]*shm.EventFD{},
		maps:   map[abi.GrantHandle]notify{},
		shares: map[uint32]notify{},

		granterOff: map[abi.GrantHandle]uint32{},
		out:        newOutbox(conn),
		conn:       conn,
		done:       make(chan struct{}),
	}
	fail := func(err error) (*os.File, error) {
		tm.Unmap()
		table.Close()
		conn.Close()
		theirs.Close()
		return nil, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fail(errors.New("hypervisor: closed"))
	}
	if h.doms[id] != nil {
		h.mu.Unlock()
		return fail(fmt.Errorf("hypervisor: dom%d exists", id))
	}
	if err := h.evt.AddDomain(id, evtchn.DomainConfig{MaxPorts: cfg.MaxPorts + 1, Privileged: cfg.Privileged}); err != nil {
		h.mu.Unlock()
		return fail(err)
	}
	if err := h.gnt.AddDomain(id, tm.Bytes(), gnttab.Config{MaxMaps: cfg.MaxMaps}); err != nil {
		h.evt.RemoveDomain(id)
		h.mu.Unlock()
		return fail(err)
	}
	h.doms[id] = d
	h.mu.Unlock()
	go d.out.run()
	go h.serve(d)
	return theirs, nil
}

// RemoveDomain releases everything a domain held, in Xen's order: its
// mappings' and shared pages' unmap notifications fire, other domains'
// mappings of its grants are revoked (they are told), its ports close
// (peers are told and kicked), then its connection closes. It returns
// once the domain's request loop has ended.
func (h *Hypervisor) RemoveDomain(id DomID) {
	h.mu.Lock()
	d := h.doms[id]
	if d == nil {
		h.mu.Unlock()
		return
	}
	h.removeLocked(d)
	h.mu.Unlock()
	<-d.done
}

// removeLocked tears a domain down.
// Preconditions: h.mu held.
func (h *Hypervisor) removeLocked(d *vdom) {
	// Notifications first, while its ports still exist: the kernel does
	// them as it unmaps a dying process's grants. A granter of another
	// host clears the mapping's notification byte in its own page when
	// told the mapper died, before the notify port's event (sent below)
	// arrives there: both travel in order to that host.
	for _, m := range h.gnt.Mappings(d.id) {
		if m.Host != "" {
			h.send(m.Host, &transport.Msg{Kind: transport.KindUnmap, Flags: unmapDead,
				FromDom: uint16(d.id), ToDom: uint16(m.Granter), Ref: uint32(m.Ref), Arg: [4]uint32{m.Gen}})
		}
	}
	// Mappers of other hosts clear this domain's share notification byte
	// in their replicas when told the grant is revoked, before the share
	// notification's event.
	for _, p := range h.gnt.RemotePins(d.id) {
		off := uint32(hypercall.NoNotify)
		if n, ok := d.shares[p.Frame]; ok {
			off = n.off
		}
		h.send(p.Host, &transport.Msg{Kind: transport.KindRevoke, FromDom: uint16(d.id), ToDom: uint16(p.Mapper),
			Ref: uint32(p.Ref), Arg: [4]uint32{off}})
	}
	for _, m := range h.gnt.Mappings(d.id) {
		if n, ok := d.maps[m.Handle]; ok && !n.none() {
			h.fireNotify(d, m.Granter, m.Frame, n)
		}
	}
	for gfn, n := range d.shares {
		h.fireNotify(d, d.id, gfn, n)
	}
	rm := h.gnt.RemoveDomain(d.id)
	for _, m := range rm.Revoked {
		if md := h.doms[m.Mapper]; md != nil {
			delete(md.maps, m.Handle)
			md.notify(hypercall.Msg{Op: hypercall.NotifyGnttabRevoke, Handle: uint32(m.Handle)})
		}
	}
	h.do(nil, h.evt.RemoveDomain(d.id), nil)
	// The hosts it had links with forget it (after the closes above,
	// which travel the same way).
	hosts := map[string]bool{}
	for k, l := range h.links {
		if k.local == d.id && !hosts[l.host] {
			hosts[l.host] = true
			h.send(l.host, &transport.Msg{Kind: transport.KindDomainGone, FromDom: uint16(d.id)})
		}
	}
	h.closeLinks(func(k linkKey, _ *link) bool { return k.local == d.id })
	for _, ev := range d.ports { // Release actions closed them all; be sure
		ev.Close()
	}
	for _, p := range d.pages {
		if p != nil {
			p.close()
		}
	}
	d.tableMap.Unmap()
	d.table.Close()
	d.out.close()
	d.conn.Close()
	delete(h.doms, d.id)
}

// fireNotify clears the notification byte of granter's frame and sends on
// d's notify port.
// Preconditions: h.mu held.
func (h *Hypervisor) fireNotify(d *vdom, granter DomID, frame uint32, n notify) {
	if n.off != hypercall.NoNotify && n.off < abi.PAGE_SIZE {
		if p := (*frames)(h).Frame(granter, frame); p != nil {
			ring.And8(p, int(n.off), 0)
		}
	}
	if n.port != hypercall.NoNotify {
		if acts, err := h.evt.Send(d.id, evtchn.Port(n.port)); err == nil {
			h.do(d, acts, nil)
		}
	}
}

// Close removes every domain.
func (h *Hypervisor) Close() {
	h.mu.Lock()
	if !h.closed {
		close(h.stop)
	}
	h.closed = true
	var ds []*vdom
	for _, d := range h.doms {
		ds = append(ds, d)
	}
	for _, d := range ds {
		h.removeLocked(d)
	}
	h.mu.Unlock()
	for _, d := range ds {
		<-d.done
	}
}

// Domains lists the local domains' ids.
func (h *Hypervisor) Domains() []DomID {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]DomID, 0, len(h.doms))
	for id := range h.doms {
		out = append(out, id)
	}
	return out
}

// Ports lists a domain's open ports, for status pages and tests.
func (h *Hypervisor) Ports(id DomID) []evtchn.PortInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.evt.Ports(id)
}

// Mappings lists the grants a domain has mapped.
func (h *Hypervisor) Mappings(id DomID) []gnttab.Mapping {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gnt.Mappings(id)
}

// frames is the grant table's view of the domains' shared pages.
type frames Hypervisor

var _ gnttab.Frames = (*frames)(nil)

// Frame implements gnttab.Frames.Frame, mapping a page into the agent the
// first time its bytes are needed.
// Preconditions: Hypervisor.mu held.
func (f *frames) Frame(dom DomID, gfn uint32) []byte {
	if gfn == inlineGFN {
		if dom == f.inline {
			return f.scratch
		}
		return nil
	}
	d := f.doms[dom]
	if d == nil || int64(gfn) >= int64(len(d.pages)) || d.pages[gfn] == nil {
		return nil
	}
	p := d.pages[gfn]
	if p.m == nil {
		m, err := p.mfd.Map(true)
		if err != nil {
			d.log.Warn("hypervisor: cannot map a shared page", "frame", gfn, "err", err)
			return nil
		}
		p.m = m
	}
	return p.m.Bytes()
}

// Stats counts what the hypervisor holds, for /metrics and leak checks.
type Stats struct {
	Domains    int // local domains
	Ports      int // their open ports
	Pages      int // their shared pages
	Maps       int // grants they map (local and remote)
	RemotePins int // pins other hosts' domains hold on their grants
	Links      int // links between local and remote domains
	Pending    int // requests waiting for another host
}

// Stats reports what the hypervisor holds now.
func (h *Hypervisor) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := Stats{Domains: len(h.doms), Links: len(h.links), Pending: len(h.pending)}
	for id, d := range h.doms {
		st.Ports += len(h.evt.Ports(id))
		st.Pages += d.npages
		st.Maps += len(h.gnt.Mappings(id))
		st.RemotePins += len(h.gnt.RemotePins(id))
	}
	return st
}
