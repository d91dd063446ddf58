package vchan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/ring"
)

// Config says how to set up a vchan. The zero Config serves or connects
// as this process's domain, with the XenStore of its environment.
type Config struct {
	// Hypervisor is the domain's connection to its agent; nil means
	// hv.Self().
	Hypervisor *hv.Conn
	// XenStore is the client used for the vchan's nodes; nil means one
	// opened from the environment (xs.OpenEnv) for this Conn alone.
	XenStore *xs.Client

	// ReadMin and WriteMin are a server's minimum ring sizes in bytes,
	// libxenvchan_server_init's read_min and write_min (see Orders).
	ReadMin, WriteMin int
	// LeftOrder and RightOrder, if set (both), choose a server's
	// ring orders directly instead: any pair the client accepts
	// (CheckOrders), including some libxenvchan's own server never
	// picks, such as an in-page ring beside a paged one.
	LeftOrder, RightOrder uint16
}

// Listen serves a vchan for domain peer under the XenStore directory
// path, with rings of at least readMin and writeMin bytes, as
// libxenvchan_server_init does. It returns the server's end at once; the
// client connects when it will (one client per vchan, as in Xen). Read
// waits for the client's data, Write may fill the ring before the client
// comes, and WaitClient waits for the client itself.
func Listen(peer DomID, path string, readMin, writeMin int) (*Conn, error) {
	cfg := Config{ReadMin: readMin, WriteMin: writeMin}
	return cfg.Listen(peer, path)
}

// Dial connects to the vchan domain peer serves under path, as
// libxenvchan_client_init does; it fails if the server has not
// published it yet (DialContext waits for it).
func Dial(peer DomID, path string) (*Conn, error) {
	var cfg Config
	return cfg.Dial(peer, path)
}

// open returns the hypervisor and XenStore connections cfg names (or
// this process's), adding the closing of a XenStore client it opened to u.
func (cfg *Config) open(u *undo) (*hv.Conn, *xs.Client, error) {
	hvc := cfg.Hypervisor
	if hvc == nil {
		var err error
		if hvc, err = hv.Self(); err != nil {
			return nil, nil, err
		}
	}
	if cfg.XenStore != nil {
		return hvc, cfg.XenStore, nil
	}
	xsc, err := xs.OpenEnv()
	if err != nil {
		return nil, nil, err
	}
	u.add(func() { xsc.Close() })
	return hvc, xsc, nil
}

func (cfg *Config) orders() (left, right uint16, err error) {
	if cfg.LeftOrder != 0 || cfg.RightOrder != 0 {
		return cfg.LeftOrder, cfg.RightOrder, CheckOrders(cfg.LeftOrder, cfg.RightOrder)
	}
	return Orders(cfg.ReadMin, cfg.WriteMin)
}

// undo runs cleanups in reverse on a failed setup.
type undo []func()

func (u *undo) add(f func()) { *u = append(*u, f) }

func (u undo) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// newConn fills in what both ends share.
func newConn(server bool, self, peer DomID, path string, evt *evtchn.Handle, port, kick evtchn.Port, res resources) *Conn {
	c := &Conn{server: server, local: Addr{self, path}, remote: Addr{peer, path}, evt: evt, port: port, kick: kick,
		res: res, woke: make(chan struct{})}
	if server {
		c.ownLive, c.peerLive = abi.VCHAN_SRV_LIVE, abi.VCHAN_CLI_LIVE
		c.ownReq, c.peerReq = abi.VCHAN_SRV_NOTIFY, abi.VCHAN_CLI_NOTIFY
	} else {
		c.ownLive, c.peerLive = abi.VCHAN_CLI_LIVE, abi.VCHAN_SRV_LIVE
		c.ownReq, c.peerReq = abi.VCHAN_CLI_NOTIFY, abi.VCHAN_SRV_NOTIFY
	}
	return c
}

// streams attaches the two rings: left (client writes) and right, each
// in the control page or in pages of its own.
func (c *Conn) streams(left, right uint16, leftMem, rightMem []byte) error {
	mk := func(order uint16, mem []byte, cons, prod int) (*ring.Stream, error) {
		if off := inPage(order); off != 0 {
			mem = c.ctl[off : off+1<<order]
		}
		s, err := ring.NewStream(mem[:1<<order], c.ctl, cons, prod)
		if err != nil {
			return nil, err
		}
		// Every write to shared memory is reported: a release across
		// hosts ships those bytes, not a comparison of the whole ring.
		s.Wrote = c.evt.Wrote
		return s, nil
	}
	l, err := mk(left, leftMem, abi.VCHAN_LEFT_CONS, abi.VCHAN_LEFT_PROD)
	if err != nil {
		return err
	}
	r, err := mk(right, rightMem, abi.VCHAN_RIGHT_CONS, abi.VCHAN_RIGHT_PROD)
	if err != nil {
		return err
	}
	if c.server {
		c.rd, c.wr = l, r
	} else {
		c.rd, c.wr = r, l
	}
	return nil
}

// Listen is the package's Listen with cfg's hypervisor, XenStore and
// ring sizes.
func (cfg *Config) Listen(peer DomID, path string) (conn *Conn, err error) {
	left, right, err := cfg.orders()
	if err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			u.run()
		}
	}()
	hvc, xsc, err := cfg.open(&u)
	if err != nil {
		return nil, err
	}
	evt, port, kick, err := openEvt(hvc, func(e *evtchn.Handle) (evtchn.Port, error) { return e.AllocUnbound(peer) })
	if err != nil {
		return nil, err
	}
	u.add(func() { evt.Close() })
	res := resources{gnt: gnttab.Open(hvc), xs: xsc, ownXS: cfg.XenStore == nil}
	g := res.gnt
	share := func(n int, notifyOff, notifyPort uint32) (*gnttab.Share, error) {
		if n == 0 {
			return nil, nil
		}
		s, err := g.SharePagesNotify(peer, n, true, notifyOff, notifyPort)
		if err != nil {
			return nil, fmt.Errorf("vchan: share %d pages with dom%d: %w", n, peer, err)
		}
		u.add(func() { g.Unshare(s) })
		evt.Explicit(s.Bytes())
		return s, nil
	}
	// The unmap notification clears srv_live and kicks the client if
	// this domain dies.
	if res.ctlShare, err = share(1, abi.VCHAN_SRV_LIVE, uint32(port)); err != nil {
		return nil, err
	}
	if res.leftShare, err = share(pages(left), gnttab.NoNotify, gnttab.NoNotify); err != nil {
		return nil, err
	}
	if res.rightShare, err = share(pages(right), gnttab.NoNotify, gnttab.NoNotify); err != nil {
		return nil, err
	}
	var refs []abi.GrantRef
	var leftMem, rightMem []byte
	if s := res.leftShare; s != nil {
		refs, leftMem = append(refs, s.Refs...), s.Bytes()
	}
	if s := res.rightShare; s != nil {
		refs, rightMem = append(refs, s.Refs...), s.Bytes()
	}
	c := newConn(true, hvc.DomID(), peer, path, evt, port, kick, res)
	c.ctl = res.ctlShare.Bytes()
	// Written before the client can know the grant: its map copies the
	// page as it is, so nothing here needs reporting.
	initPage(c.ctl, left, right, refs)
	if err := c.streams(left, right, leftMem, rightMem); err != nil {
		return nil, err
	}
	if err := publish(xsc, hvc.DomID(), peer, path, res.ctlShare.Refs[0], port); err != nil {
		return nil, err
	}
	return c, nil
}

// openEvt opens the Conn's own event handle (a wait takes whatever port
// of its handle fires), binds the vchan's port with bind and an IPI port
// for interrupting waits.
func openEvt(hvc *hv.Conn, bind func(*evtchn.Handle) (evtchn.Port, error)) (*evtchn.Handle, evtchn.Port, evtchn.Port, error) {
	evt, err := evtchn.Open(hvc)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("vchan: %w", err)
	}
	port, err := bind(evt)
	if err == nil {
		var kick evtchn.Port
		if kick, err = evt.BindIPI(); err == nil {
			return evt, port, kick, nil
		}
	}
	evt.Close()
	return nil, 0, 0, fmt.Errorf("vchan: event channel: %w", err)
}

// publish writes the vchan's nodes as init_xs_srv does: ring-ref and
// event-channel under path, each owned by this domain, readable by the
// peer and no one else, in one transaction retried on EAGAIN. The owner
// is the domain's id as its agent knows it, where libxenvchan reads the
// relative node "domid"; the nodes are the same.
func publish(c *xs.Client, self, peer DomID, path string, ref abi.GrantRef, port evtchn.Port) error {
	perms := []xs.Perm{{Domid: uint32(self), Access: xs.AccessNone}, {Domid: uint32(peer), Access: xs.AccessRead}}
	err := c.Transaction(func(t *xs.Tx) error {
		for _, kv := range [][2]string{
			{path + "/ring-ref", strconv.FormatUint(uint64(ref), 10)},
			{path + "/event-channel", strconv.FormatUint(uint64(port), 10)},
		} {
			if err := t.Write(kv[0], []byte(kv[1])); err != nil {
				return err
			}
			if err := t.SetPerms(kv[0], perms...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("vchan: publish %s in XenStore: %w", path, err)
	}
	return nil
}

// readNum reads a decimal XenStore node the client needs; 0 is refused,
// as libxenvchan refuses it.
func readNum(c *xs.Client, path string) (uint32, error) {
	v, err := c.Read(path)
	if err != nil {
		return 0, fmt.Errorf("vchan: read %s: %w", path, err)
	}
	n, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("vchan: %s is %q, not a non-zero number: %w", path, v, syscall.EINVAL)
	}
	return uint32(n), nil
}

// Dial is the package's Dial with cfg's hypervisor and XenStore.
func (cfg *Config) Dial(peer DomID, path string) (conn *Conn, err error) {
	var u undo
	defer func() {
		if err != nil {
			u.run()
		}
	}()
	hvc, xsc, err := cfg.open(&u)
	if err != nil {
		return nil, err
	}
	ref, err := readNum(xsc, path+"/ring-ref")
	if err != nil {
		return nil, err
	}
	rport, err := readNum(xsc, path+"/event-channel")
	if err != nil {
		return nil, err
	}
	evt, port, kick, err := openEvt(hvc, func(e *evtchn.Handle) (evtchn.Port, error) {
		return e.BindInterdomain(peer, evtchn.Port(rport))
	})
	if err != nil {
		return nil, err
	}
	u.add(func() { evt.Close() })
	res := resources{gnt: gnttab.Open(hvc), xs: xsc, ownXS: cfg.XenStore == nil}
	g := res.gnt
	mapRefs := func(refs []abi.GrantRef, writable bool, notifyOff, notifyPort uint32) (*gnttab.Mapping, error) {
		if len(refs) == 0 {
			return nil, nil
		}
		var m *gnttab.Mapping
		var err error
		if notifyOff != gnttab.NoNotify {
			m, err = g.MapNotify(peer, refs[0], writable, notifyOff, notifyPort)
		} else {
			m, err = g.Map(peer, refs, writable)
		}
		if err != nil {
			return nil, fmt.Errorf("vchan: map %d grants of dom%d: %w", len(refs), peer, err)
		}
		u.add(func() { g.Unmap(m) })
		evt.Explicit(m.Bytes())
		return m, nil
	}
	// The unmap notification clears cli_live and kicks the server if
	// this domain dies.
	if res.ctlMap, err = mapRefs([]abi.GrantRef{abi.GrantRef(ref)}, true, abi.VCHAN_CLI_LIVE, uint32(port)); err != nil {
		return nil, err
	}
	evt.Acquire()
	var l abi.VchanLayout
	evt.View(func() { l, err = DecodePage(res.ctlMap.Bytes()) })
	if err != nil {
		return nil, fmt.Errorf("vchan: dom%d's %s: %w", peer, path, err)
	}
	if res.leftMap, err = mapRefs(l.LeftGrants, true, gnttab.NoNotify, gnttab.NoNotify); err != nil {
		return nil, err
	}
	if res.rightMap, err = mapRefs(l.RightGrants, false, gnttab.NoNotify, gnttab.NoNotify); err != nil {
		return nil, err
	}
	var leftMem, rightMem []byte
	if res.leftMap != nil {
		leftMem = res.leftMap.Bytes()
	}
	if res.rightMap != nil {
		rightMem = res.rightMap.Bytes()
	}
	c := newConn(false, hvc.DomID(), peer, path, evt, port, kick, res)
	c.ctl = res.ctlMap.Bytes()
	if err := c.streams(l.Left.Order, l.Right.Order, leftMem, rightMem); err != nil {
		return nil, err
	}
	c.setByte(abi.VCHAN_CLI_LIVE, abi.VCHAN_LIVE_OK)
	c.setByte(abi.VCHAN_SRV_NOTIFY, abi.VCHAN_NOTIFY_WRITE)
	if err := evt.Notify(port); err != nil { // wake the server
		return nil, fmt.Errorf("vchan: %w", err)
	}
	return c, nil
}

// DialContext is Dial that waits, until ctx ends, for the server to
// publish the vchan (vchan-socket-proxy's client retries the same way).
func (cfg *Config) DialContext(ctx context.Context, peer DomID, path string) (*Conn, error) {
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		c, err := cfg.Dial(peer, path)
		// Not there yet: ENOENT, or EACCES while the nearest node that
		// exists is the server's own, unreadable directory.
		if err == nil || !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EACCES) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waiting for %s: %w)", ctx.Err(), path, err)
		case <-time.After(delay):
		}
	}
}

// Close ends this end of the vchan as libxenvchan_close does: it clears
// its live byte and wakes the peer (whose Read then returns io.EOF after
// the data already written), gives back the rings and the control page
// and closes the event channel; a server also removes path from
// XenStore. A Read or Write blocked meanwhile returns net.ErrClosed.
//
// A server's pages still mapped by its client cannot be revoked yet
// (gnttab.ErrBusy); Close leaves them to a goroutine that retries until
// the client has unmapped them (as Linux's gntalloc frees a page only
// once its grantee lets go).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		if err == nil {
			err = c.opError("close", net.ErrClosed)
		}
		return err
	}
	c.closed = true
	c.mu.Unlock()
	c.interrupt()
	// Wait for a Read or Write in progress to see it: nothing may touch
	// the pages once they are gone.
	c.rmu.Lock()
	c.wmu.Lock()
	defer c.rmu.Unlock()
	defer c.wmu.Unlock()
	err := c.teardown()
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return err
}

func (c *Conn) teardown() error {
	var errs []error
	r, g := &c.res, c.res.gnt
	c.setByte(c.ownLive, abi.VCHAN_LIVE_GONE)
	if c.server {
		// The event releases srv_live = 0 before the pages go.
		if err := c.evt.Notify(c.port); err != nil && !errors.Is(err, evtchn.ErrNotBound) {
			errs = append(errs, err)
		}
		for _, s := range []*gnttab.Share{r.leftShare, r.rightShare, r.ctlShare} {
			if s != nil {
				unshareLater(g, s)
			}
		}
	} else {
		for _, m := range []*gnttab.Mapping{r.leftMap, r.rightMap} {
			if m != nil {
				errs = append(errs, g.Unmap(m))
			}
		}
		// Unmapping clears cli_live (again) and kicks the server.
		errs = append(errs, g.Unmap(r.ctlMap))
		c.evt.Notify(c.port)
	}
	errs = append(errs, c.evt.Close())
	if c.server {
		if err := r.xs.Rm(c.local.Path); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("vchan: remove %s: %w", c.local.Path, err))
		}
	}
	if r.ownXS {
		r.xs.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return c.opError("close", err)
	}
	return nil
}

// unshareLater revokes s now, or once its grantee has unmapped it.
func unshareLater(g *gnttab.Handle, s *gnttab.Share) {
	if err := g.Unshare(s); !errors.Is(err, gnttab.ErrBusy) {
		return
	}
	go func() {
		for delay := time.Millisecond; ; delay = min(2*delay, time.Second) {
			time.Sleep(delay)
			if err := g.Unshare(s); !errors.Is(err, gnttab.ErrBusy) {
				return
			}
		}
	}()
}
