package blkfront

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/ring"
)

// Options tune Open; the zero value is the defaults.
type Options struct {
	// Timeout bounds the handshake: the back end's InitWait, then its
	// Connected. Default 30 s.
	Timeout time.Duration
	// RingPageOrder is the ring's size, 2^order pages, up to the back
	// end's max-ring-page-order. Default 1 (64 requests in flight, twice
	// the queue depth of the usual benchmark) where the back end offers
	// it; -1 asks for a single page.
	RingPageOrder int
	// PoolPages is how many data pages the front end grants the back end
	// once (persistent grants): the data of the requests in flight, and
	// their indirect descriptors. Default 256 (1 MiB).
	PoolPages int
	// MaxSegments caps one request's pages when the back end takes
	// indirect descriptors. Default 64 (256 KiB per request).
	MaxSegments int
	// CloseTimeout bounds each wait of Close: for the requests in
	// flight, then for the back end to close. Default 5 s.
	CloseTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.RingPageOrder == 0 {
		o.RingPageOrder = 1
	}
	if o.PoolPages <= 0 {
		o.PoolPages = 256
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = 64
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 5 * time.Second
	}
}

// Open connects to this domain's disk dev ("xvda"), whose keys the
// toolstack wrote (toolstack.Keys), with the default Options.
func Open(hvc *hv.Conn, xsc *xs.Client, dev string) (*Disk, error) {
	return OpenOptions(hvc, xsc, dev, Options{})
}

// OpenOptions connects to disk dev as Linux's blkfront does: it waits for
// the back end's InitWait (or its error), grants the ring, binds an
// unbound event channel to the back end's domain, writes ring-ref (or
// ring-ref<i> and ring-page-order), event-channel, protocol and
// feature-persistent, goes to Initialised, waits for Connected, reads
// sectors, sector-size, info and the features, grants the pool of data
// pages and goes to Connected. A back end that gives up (state Closed,
// with its error key) fails Open with its message.
func OpenOptions(hvc *hv.Conn, xsc *xs.Client, dev string, opts Options) (_ *Disk, err error) {
	opts.setDefaults()
	devid, err := blkif.DevID(dev)
	if err != nil {
		return nil, err
	}
	self := uint32(hvc.DomID())
	fdir := blkif.FrontPath(self, devid)
	bdir, err := readString(xsc, fdir+"/"+blkif.KeyBackend)
	if err != nil {
		return nil, err
	}
	be, err := readUint(xsc, fdir+"/"+blkif.KeyBackendID, 16)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	d := &Disk{dev: dev, xs: xsc, fdir: fdir, bdir: bdir, be: evtchn.DomID(be), opts: opts, g: gnttab.Open(hvc),
		completerDone: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := d.newSession(ctx); err != nil {
		return nil, err
	}
	if err := d.waitBackend(ctx, "InitWait", func(s blkif.State) bool { return s >= blkif.StateInitWait }); err != nil {
		return nil, err
	}
	order := 0
	if opts.RingPageOrder > 0 {
		if max, err := readUint(xsc, bdir+"/"+blkif.KeyMaxRingPageOrder, 8); err == nil {
			order = min(opts.RingPageOrder, int(max), 4)
		}
	}
	if d.evt, err = evtchn.Open(hvc); err != nil {
		return nil, fmt.Errorf("blkfront: %s: %w", dev, err)
	}
	undo = append(undo, func() { d.evt.Close() })
	if d.port, err = d.evt.AllocUnbound(d.be); err != nil {
		return nil, fmt.Errorf("blkfront: %s: event channel for dom%d: %w", dev, d.be, err)
	}
	if d.kick, err = d.evt.BindIPI(); err != nil {
		return nil, fmt.Errorf("blkfront: %s: %w", dev, err)
	}
	if d.ringShare, err = d.g.SharePages(d.be, 1<<order, true); err != nil {
		return nil, fmt.Errorf("blkfront: %s: share the ring with dom%d: %w", dev, d.be, err)
	}
	undo = append(undo, func() { unshareLater(d.g, d.ringShare) })
	shared := d.ringShare.Bytes()
	// SHARED_RING_INIT before the grant is known: the back end's map
	// copies the page as it is, so nothing needs reporting.
	ring.Init(shared)
	d.evt.Explicit(shared)
	// A handshake that fails from here on tells the back end to let go.
	undo = append(undo, func() { blkif.WriteState(xsc, fdir, blkif.StateClosed) })
	if err := d.publish(order); err != nil {
		return nil, err
	}
	if err := d.waitBackend(ctx, "Connected", func(s blkif.State) bool { return s >= blkif.StateConnected }); err != nil {
		return nil, err
	}
	if err := d.readProperties(); err != nil {
		return nil, err
	}
	maxIndirect := min(d.maxIndirect, opts.MaxSegments)
	if d.poolShare, err = d.g.SharePages(d.be, opts.PoolPages, true); err != nil {
		return nil, fmt.Errorf("blkfront: %s: share %d data pages with dom%d: %w", dev, opts.PoolPages, d.be, err)
	}
	undo = append(undo, func() { unshareLater(d.g, d.poolShare) })
	d.evt.Explicit(d.poolShare.Bytes())
	d.q, err = newQueue(shared, d.poolShare.Bytes(), d.poolShare.Refs, uint16(devid), maxIndirect, d.evt.Wrote)
	if err != nil {
		return nil, fmt.Errorf("blkfront: %s: %w", dev, err)
	}
	if err := blkif.WriteState(xsc, fdir, blkif.StateConnected); err != nil {
		return nil, err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	d.stopWatch = stopWatch
	d.watchDone = make(chan struct{})
	go d.watchBackend(watchCtx)
	go d.completer()
	return d, nil
}

// newSession starts again a disk this domain opened before (and
// closed): the front end goes back to Initialising, and the back end's
// Closed from the last session is not a refusal of this one; Open waits
// for the back end to leave it.
func (d *Disk) newSession(ctx context.Context) error {
	s, err := blkif.ReadState(d.xs, d.fdir)
	if err != nil {
		return fmt.Errorf("blkfront: %s: %w", d.dev, err)
	}
	if s == blkif.StateInitialising || s == blkif.StateUnknown {
		return nil
	}
	if err := blkif.WriteState(d.xs, d.fdir, blkif.StateInitialising); err != nil {
		return err
	}
	if _, err := blkif.WaitState(ctx, d.xs, d.bdir, func(s blkif.State) bool { return !s.Closing() }); err != nil {
		return fmt.Errorf("blkfront: %s: the back end did not start a new session: %w (its error: %q)", d.dev, err, blkif.ReadError(d.xs, d.bdir))
	}
	return nil
}

// waitBackend waits for the back end's state to satisfy ok; a back end
// that closes meanwhile fails it with the back end's error key.
func (d *Disk) waitBackend(ctx context.Context, what string, ok func(blkif.State) bool) error {
	s, err := blkif.WaitState(ctx, d.xs, d.bdir, func(s blkif.State) bool { return ok(s) || s.Closing() })
	if err != nil {
		return fmt.Errorf("blkfront: %s: waiting for the back end (%s) to be %s: %w", d.dev, d.bdir, what, err)
	}
	if s.Closing() {
		msg := blkif.ReadError(d.xs, d.bdir)
		if msg == "" {
			msg = "no reason given"
		}
		return fmt.Errorf("blkfront: %s: the back end refused the disk (state %v): %s: %w", d.dev, s, msg, syscall.EIO)
	}
	return nil
}

// publish writes the ring's keys and goes to Initialised.
func (d *Disk) publish(order int) error {
	kv := [][2]string{
		{blkif.KeyEventChannel, strconv.FormatUint(uint64(d.port), 10)},
		{blkif.KeyProtocol, blkif.ProtocolNative},
		{blkif.KeyFeaturePersistent, "1"},
	}
	if order == 0 {
		kv = append(kv, [2]string{blkif.KeyRingRef, strconv.FormatUint(uint64(d.ringShare.Refs[0]), 10)})
	} else {
		kv = append(kv, [2]string{blkif.KeyRingPageOrder, strconv.Itoa(order)})
		for i, r := range d.ringShare.Refs {
			kv = append(kv, [2]string{blkif.RingRefKey(i), strconv.FormatUint(uint64(r), 10)})
		}
	}
	err := d.xs.Transaction(func(t *xs.Tx) error {
		// The ring keys of an earlier session, whatever their form, go.
		names, err := t.Directory(d.fdir)
		if err != nil {
			return err
		}
		for _, n := range names {
			if strings.HasPrefix(n, blkif.KeyRingRef) || n == blkif.KeyRingPageOrder {
				if err := t.Rm(d.fdir + "/" + n); err != nil && !errors.Is(err, syscall.ENOENT) {
					return err
				}
			}
		}
		for _, p := range kv {
			if err := t.Write(d.fdir+"/"+p[0], []byte(p[1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blkfront: %s: publish the ring in %s: %w", d.dev, d.fdir, err)
	}
	return blkif.WriteState(d.xs, d.fdir, blkif.StateInitialised)
}

// readProperties reads what the back end publishes by Connected.
func (d *Disk) readProperties() error {
	vals := map[string]string{}
	for _, k := range propKeys {
		if v, err := d.xs.Read(d.bdir + "/" + k); err == nil {
			vals[k] = string(v)
		}
	}
	p, err := parseProps(vals)
	if err != nil {
		return fmt.Errorf("blkfront: %s: the back end's %w", d.dev, err)
	}
	d.size, d.sectorSize, d.readOnly, d.flush, d.discard = p.size, p.sectorSize, p.readOnly, p.flush, p.discard
	d.maxIndirect = p.maxIndirect
	return nil
}

// propKeys are the back end's keys parseProps reads.
var propKeys = []string{blkif.KeySectors, blkif.KeySectorSize, blkif.KeyInfo, blkif.KeyMode,
	blkif.KeyFeatureFlushCache, blkif.KeyFeatureDiscard, blkif.KeyFeatureMaxIndirect}

// props is what a back end publishes by Connected, checked: the values
// come from another domain.
type props struct {
	size                     int64
	sectorSize               int
	readOnly, flush, discard bool
	maxIndirect              int // 0: no indirect descriptors
}

// parseProps checks the back end's keys (missing ones take Xen's
// defaults, but sectors is required).
func parseProps(vals map[string]string) (props, error) {
	num := func(k string, bits int) (uint64, bool, error) {
		v, ok := vals[k]
		if !ok {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
		if err != nil {
			return 0, false, fmt.Errorf("%s is %q, not a number: %w", k, v, syscall.EINVAL)
		}
		return n, true, nil
	}
	var p props
	sectors, ok, err := num(blkif.KeySectors, 64)
	if err != nil {
		return p, err
	}
	if !ok {
		return p, fmt.Errorf("%s is missing: %w", blkif.KeySectors, syscall.EINVAL)
	}
	p.sectorSize = abi.BlkifSectorSize
	if v, ok, err := num(blkif.KeySectorSize, 32); err != nil {
		return p, err
	} else if ok {
		// A power of two of at least 512; we never advertise large
		// sectors, so requests still count 512-byte sectors.
		if v < abi.BlkifSectorSize || v > 1<<20 || v&(v-1) != 0 {
			return p, fmt.Errorf("%s %d: %w", blkif.KeySectorSize, v, syscall.EINVAL)
		}
		p.sectorSize = int(v)
	}
	if sectors > (1<<63-1)/uint64(p.sectorSize) {
		return p, fmt.Errorf("%s %d: %w", blkif.KeySectors, sectors, syscall.EINVAL)
	}
	p.size = int64(sectors) * int64(p.sectorSize)
	if info, ok, err := num(blkif.KeyInfo, 32); err != nil {
		return p, err
	} else if ok {
		p.readOnly = info&abi.VDISK_READONLY != 0
	}
	p.readOnly = p.readOnly || vals[blkif.KeyMode] == blkif.ModeRead
	flag := func(k string) bool { n, _, err := num(k, 8); return err == nil && n != 0 }
	p.flush, p.discard = flag(blkif.KeyFeatureFlushCache), flag(blkif.KeyFeatureDiscard)
	if n, _, err := num(blkif.KeyFeatureMaxIndirect, 32); err == nil {
		p.maxIndirect = int(min(n, 1<<16))
	}
	return p, nil
}

// watchBackend fails the disk when the back end closes or its directory
// goes.
func (d *Disk) watchBackend(ctx context.Context) {
	defer close(d.watchDone)
	s, err := blkif.WaitState(ctx, d.xs, d.bdir, blkif.State.Closing)
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, blkif.ErrGone):
		d.fail(fmt.Errorf("%w (its directory %s was removed)", ErrBackendGone, d.bdir))
	case err == nil:
		d.fail(fmt.Errorf("%w (it went to %v)", ErrBackendGone, s))
	}
}

func readString(c *xs.Client, path string) (string, error) {
	v, err := c.Read(path)
	if err != nil {
		return "", fmt.Errorf("blkfront: read %s: %w", path, err)
	}
	return string(v), nil
}

func readUint(c *xs.Client, path string, bits int) (uint64, error) {
	v, err := readString(c, path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("blkfront: %s is %q, not a number: %w", path, v, syscall.EINVAL)
	}
	return n, nil
}

// unshareLater revokes s now, or once its grantee has unmapped it (as
// Linux's gntalloc frees a page only once its grantee lets go).
func unshareLater(g *gnttab.Handle, s *gnttab.Share) {
	if s == nil {
		return
	}
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
