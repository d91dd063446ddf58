package blkback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/devices/blkif"
	"shi/internal/nbd"
)

// Limits the back end publishes.
const (
	// MaxIndirectSegments is feature-max-indirect-segments: 256 segments
	// of 4 KiB, a 1 MiB request, in one indirect page (Linux's default).
	MaxIndirectSegments = 256
	// MaxRingPageOrder is max-ring-page-order: rings of up to 16 pages.
	MaxRingPageOrder = 4
	// maxRetry bounds the wait between retries of a disk that failed
	// (its image in use, or missing) for a front end that waits.
	maxRetry = 8 * time.Second
	// discardGranularity is what a hole punched in a file is made of.
	discardGranularity = 4096
)

// ServiceConfig configures the block back ends of one driver domain.
type ServiceConfig struct {
	// Hypervisor is the driver domain's connection to its agent.
	Hypervisor *hv.Conn
	// XenStore is a client that may read the front ends' vbd
	// directories and write the back-end directories.
	XenStore *xs.Client
	Logger   *slog.Logger
	// Open opens an image; nil: OpenFile (a raw sparse file, flock'ed).
	// A store that is an io.Closer is closed when its session ends.
	Open func(path string, writable bool) (nbd.Backend, error)
}

// Service runs the block back ends of one driver domain: one per
// directory under blkif.BackendDir(driver), which the toolstack writes
// when it creates a domain with a disk this driver serves.
type Service struct {
	cfg    ServiceConfig
	driver uint32

	// mu guards running, ended and held.
	mu      sync.Mutex
	running map[diskKey]bool
	// ended are disks whose front end went while their back-end
	// directory stayed (we could not remove it): not served again until
	// the toolstack writes it anew (state Initialising), or our own
	// writes there would start them over and over.
	ended map[diskKey]bool
	// held are the images the sessions have open, by path (see openImage).
	held map[string]map[*holding]bool
}

type diskKey struct{ fe, devid uint32 }

// NewService returns a service for the driver domain behind cfg.Hypervisor.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Open == nil {
		cfg.Open = OpenFile
	}
	return &Service{cfg: cfg, driver: uint32(cfg.Hypervisor.DomID()), running: map[diskKey]bool{}, ended: map[diskKey]bool{},
		held: map[string]map[*holding]bool{}}
}

// Run serves disks until ctx ends, then waits for their sessions to end
// (each flushes and closes its store).
func (s *Service) Run(ctx context.Context) error {
	dir := blkif.BackendDir(s.driver)
	xc := s.cfg.XenStore
	var wg sync.WaitGroup
	defer wg.Wait()
	err := xc.WatchDir(ctx, dir, "vbd-backends", 5*time.Second, func(fes []string, err error) {
		if err != nil {
			s.cfg.Logger.Warn("blkback: list back ends", "err", err)
			return
		}
		seen := map[diskKey]bool{}
		for _, name := range fes {
			fe, err := strconv.ParseUint(name, 10, 16)
			if err != nil {
				continue
			}
			devs, err := xc.Directory(dir + "/" + name)
			if err != nil {
				continue
			}
			for _, dn := range devs {
				devid, err := strconv.ParseUint(dn, 10, 32)
				if err != nil {
					continue
				}
				k := diskKey{uint32(fe), uint32(devid)}
				seen[k] = true
				// A directory without its state key is still being
				// written (or removed): its next change brings it back.
				st, err := blkif.ReadState(xc, blkif.BackendPath(s.driver, k.fe, k.devid))
				if err != nil {
					continue
				}
				s.mu.Lock()
				have := s.running[k] || s.ended[k] && st != blkif.StateInitialising
				if !have {
					s.running[k] = true
					delete(s.ended, k)
				}
				s.mu.Unlock()
				if have {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					stays := s.serve(ctx, k)
					s.mu.Lock()
					delete(s.running, k)
					if stays {
						s.ended[k] = true
					}
					s.mu.Unlock()
				}()
			}
		}
		s.mu.Lock()
		for k := range s.ended {
			if !seen[k] {
				delete(s.ended, k)
			}
		}
		s.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("blkback: %w", err)
	}
	return nil
}

// disk is one back-end directory being served.
type disk struct {
	diskKey
	bp, fp string // back-end and front-end directories
	log    *slog.Logger
	// sawFront: the front end's directory existed once, so its going
	// means the domain went (and our directory goes with it).
	sawFront bool
}

// ending says how a session ended.
type ending int

const (
	endClosed  ending = iota // the front end closed or failed: it may come back
	endRestart               // the front end is Initialising again: serve it now
	endGone                  // the front end's directory or ours is gone, or ctx ended
)

// serve runs sessions for one disk until its directories go. It reports
// whether the back-end directory stays behind.
func (s *Service) serve(ctx context.Context, k diskKey) (stays bool) {
	d := &disk{diskKey: k, bp: blkif.BackendPath(s.driver, k.fe, k.devid)}
	d.fp = blkif.FrontPath(k.fe, k.devid)
	if v, err := s.cfg.XenStore.Read(d.bp + "/" + blkif.KeyFrontend); err == nil && len(v) > 0 {
		d.fp = string(v)
	}
	d.log = s.cfg.Logger.With("fe", k.fe, "devid", k.devid)
	retry := time.Duration(0)
	for {
		end, front := s.session(ctx, d)
		if end == endGone {
			break
		}
		if end == endRestart {
			continue
		}
		// A session that failed before the front end moved is retried
		// while the front end waits in Initialising, less and less
		// often: the image may be free (or readable) again.
		if front == blkif.StateUnknown {
			retry = min(max(2*retry, time.Second), maxRetry)
		} else {
			retry = 0
		}
		if s.waitRestart(ctx, d, front, retry) == endGone {
			break
		}
	}
	if ctx.Err() == nil && d.sawFront {
		if s.frontGone(d.fp) {
			// The domain is gone: its back-end directory goes too.
			xc := s.cfg.XenStore
			xc.Rm(d.bp)
			parent := blkif.BackendDir(s.driver) + "/" + strconv.FormatUint(uint64(k.fe), 10)
			if rest, err := xc.Directory(parent); err == nil && len(rest) == 0 {
				xc.Rm(parent)
			}
		}
	}
	d.log.Debug("blkback: disk done")
	_, err := blkif.ReadState(s.cfg.XenStore, d.bp)
	return err == nil
}

// frontGone reports whether the front-end directory fp is gone: its
// domain has ended.
func (s *Service) frontGone(fp string) bool {
	_, err := blkif.ReadState(s.cfg.XenStore, fp)
	return errors.Is(err, blkif.ErrGone)
}

// holding is a session's hold on an image: its front end's directory,
// and a channel closed once it has closed the image.
type holding struct {
	fp   string
	done chan struct{}
}

// hold records that d's session has the image at path open; the
// returned function says it closed it.
func (s *Service) hold(path string, d *disk) (release func()) {
	h := &holding{fp: d.fp, done: make(chan struct{})}
	s.mu.Lock()
	if s.held[path] == nil {
		s.held[path] = map[*holding]bool{}
	}
	s.held[path][h] = true
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.held[path], h)
		if len(s.held[path]) == 0 {
			delete(s.held, path)
		}
		s.mu.Unlock()
		close(h.done)
	}
}

// inUseWait bounds how long a session waits for this service's sessions
// of domains that are gone to let go of the image it asks for.
const inUseWait = 20 * time.Second

// openImage opens the image at path. An image in use by sessions of
// this service whose domains are gone is opened once they let go: a
// destroy returns once the domain's processes have, and its session
// then still flushes and closes the image, while a create right after
// may name the same image. An image a running domain holds is refused
// at once (after a second, in which this host's replica may learn that
// the holder is gone).
func (s *Service) openImage(ctx context.Context, path string, writable bool) (nbd.Backend, error) {
	store, err := s.cfg.Open(path, writable)
	if !errors.Is(err, ErrInUse) {
		return store, err
	}
	start := time.Now()
	for {
		s.mu.Lock()
		holders := slices.Collect(maps.Keys(s.held[path]))
		s.mu.Unlock()
		if len(holders) == 0 {
			return s.cfg.Open(path, writable) // let go meanwhile, or held elsewhere
		}
		live := false
		for _, h := range holders {
			live = live || !s.frontGone(h.fp)
		}
		if live && time.Since(start) > time.Second || time.Since(start) > inUseWait {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-holders[0].done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fail reports why the session could not go on and closes the back end.
func (s *Service) fail(d *disk, msg string) {
	d.log.Warn("blkback: disk failed", "err", msg)
	blkif.WriteError(s.cfg.XenStore, d.bp, msg)
}

// session runs one xenbus connection: open, InitWait, wait for the front
// end, connect, serve, close. It returns how it ended and the front
// end's last state seen.
func (s *Service) session(ctx context.Context, d *disk) (ending, blkif.State) {
	xc := s.cfg.XenStore
	params, err1 := xc.Read(d.bp + "/" + blkif.KeyParams)
	mode, err2 := xc.Read(d.bp + "/" + blkif.KeyMode)
	if err := errors.Join(err1, err2); err != nil {
		if _, err := blkif.ReadState(xc, d.bp); errors.Is(err, blkif.ErrGone) {
			return endGone, 0
		}
		s.fail(d, fmt.Sprintf("the disk's params or mode key cannot be read: %v", err))
		return endClosed, blkif.StateUnknown
	}
	writable := string(mode) == blkif.ModeWrite
	if m := string(mode); m != blkif.ModeWrite && m != blkif.ModeRead {
		s.fail(d, fmt.Sprintf("mode %q is neither r nor w", m))
		return endClosed, blkif.StateUnknown
	}
	path := string(params)
	store, err := s.openImage(ctx, path, writable)
	if err != nil {
		s.fail(d, fmt.Sprintf("cannot open the disk image: %v", err))
		return endClosed, blkif.StateUnknown
	}
	release := s.hold(path, d)
	storeOpen := true
	closeStore := func() error {
		if !storeOpen {
			return nil
		}
		storeOpen = false
		var err error
		if c, ok := store.(io.Closer); ok {
			err = c.Close()
		}
		release()
		return err
	}
	defer closeStore()
	geo := Geometry{Sectors: uint64(store.Size()) / abi.BlkifSectorSize, ReadOnly: !writable || store.ReadOnly(),
		Discard: writable && !store.ReadOnly(), MaxIndirect: MaxIndirectSegments}
	if err := s.publish(d, geo); err != nil {
		s.fail(d, fmt.Sprintf("cannot publish the disk's features: %v", err))
		return endClosed, blkif.StateUnknown
	}

	if _, err := blkif.ReadState(xc, d.fp); err == nil {
		d.sawFront = true
	}
	front, err := blkif.WaitState(ctx, xc, d.fp, func(st blkif.State) bool {
		return st >= blkif.StateInitialised && st != blkif.StateReconfiguring && st != blkif.StateReconfigured
	})
	switch {
	case ctx.Err() != nil:
		return endGone, front
	case errors.Is(err, blkif.ErrGone):
		return endGone, front
	case err != nil:
		s.fail(d, fmt.Sprintf("waiting for the front end: %v", err))
		return endClosed, front
	case front.Closing():
		closeStore()
		blkif.WriteState(xc, d.bp, blkif.StateClosed)
		return endClosed, front
	}
	rs, err := s.readRing(d)
	if err != nil {
		s.fail(d, err.Error())
		return endClosed, front
	}
	c, err := connect(s.cfg.Hypervisor, d.fe, rs, store, geo, d.log)
	if err != nil {
		s.fail(d, fmt.Sprintf("cannot connect to the front end: %v", err))
		return endClosed, front
	}
	if err := blkif.WriteState(xc, d.bp, blkif.StateConnected); err != nil {
		c.close()
		return endClosed, front
	}
	d.log.Info("blkback: connected", "sectors", geo.Sectors, "readonly", geo.ReadOnly, "ring-pages", len(rs.refs), "persistent", rs.persistent)

	// Watch the front end while serving: Closing, Closed, a reset to
	// Initialising or its directory gone end the session.
	// Our own directory removed (the toolstack unplugged the disk) ends
	// it too.
	sctx, cancel := context.WithCancel(ctx)
	var watched sync.WaitGroup
	watched.Add(2)
	var frontErr, backErr error
	go func() {
		defer watched.Done()
		front, frontErr = blkif.WaitState(sctx, xc, d.fp, func(st blkif.State) bool {
			return st.Closing() || st == blkif.StateInitialising
		})
		cancel()
	}()
	go func() {
		defer watched.Done()
		_, backErr = blkif.WaitState(sctx, xc, d.bp, func(blkif.State) bool { return false })
		cancel()
	}()
	runErr := c.run(sctx)
	cancel()
	watched.Wait()
	// As Linux blkback: disconnect (requests finished, store flushed and
	// closed, its lock released) before saying so, so that a front end
	// that saw this Closed may hand the image to another domain.
	closeErr := errors.Join(c.close(), closeStore())
	switch {
	case ctx.Err() != nil:
		d.log.Info("blkback: stopped", "err", closeErr)
		return endGone, front
	case errors.Is(frontErr, blkif.ErrGone):
		d.log.Info("blkback: the front end's directory is gone", "err", closeErr)
		return endGone, front
	case errors.Is(backErr, blkif.ErrGone):
		d.log.Info("blkback: the back-end directory is gone", "err", closeErr)
		return endGone, front
	case runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, ErrPeerGone):
		s.fail(d, fmt.Sprintf("disk disconnected: %v", runErr))
		return endClosed, front
	}
	d.log.Info("blkback: disconnected", "front", front, "run", runErr, "close", closeErr)
	if closeErr != nil {
		s.fail(d, fmt.Sprintf("disk disconnected, but flushing or unmapping failed: %v", closeErr))
		return endClosed, front
	}
	blkif.WriteState(xc, d.bp, blkif.StateClosed)
	if front == blkif.StateInitialising {
		return endRestart, front
	}
	return endClosed, front
}

// publish writes the back end's features and the disk's size, then
// InitWait.
func (s *Service) publish(d *disk, g Geometry) error {
	xc := s.cfg.XenStore
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	info := 0
	if g.ReadOnly {
		info |= abi.VDISK_READONLY
	}
	kv := [][2]string{
		{blkif.KeyFeatureFlushCache, "1"},
		{blkif.KeyFeatureBarrier, "0"},
		{blkif.KeyFeatureDiscard, b(g.Discard)},
		{blkif.KeyDiscardGranularity, strconv.Itoa(discardGranularity)},
		{blkif.KeyDiscardAlignment, "0"},
		{blkif.KeyDiscardSecure, "0"},
		{blkif.KeyFeaturePersistent, "1"},
		{blkif.KeyFeatureMaxIndirect, strconv.Itoa(g.MaxIndirect)},
		{blkif.KeyMaxRingPageOrder, strconv.Itoa(MaxRingPageOrder)},
		{blkif.KeySectors, strconv.FormatUint(g.Sectors, 10)},
		{blkif.KeySectorSize, strconv.Itoa(abi.BlkifSectorSize)},
		{blkif.KeyPhysSectorSize, strconv.Itoa(abi.BlkifSectorSize)},
		{blkif.KeyInfo, strconv.Itoa(info)},
	}
	// One transaction: one commit instead of a round trip per key, and
	// a front end sees them all at once.
	return xc.Transaction(func(t *xs.Tx) error {
		// An error from an earlier session goes (only if there: a
		// failed operation must not spoil the transaction).
		if _, err := t.Read(d.bp + "/" + blkif.KeyError); err == nil {
			if err := t.Rm(d.bp + "/" + blkif.KeyError); err != nil {
				return err
			}
		}
		for _, e := range kv {
			if err := t.Write(d.bp+"/"+e[0], []byte(e[1])); err != nil {
				return err
			}
		}
		return t.Write(d.bp+"/"+blkif.KeyState, []byte(blkif.StateInitWait.String10()))
	})
}

// readRing reads what the front end published for its ring.
func (s *Service) readRing(d *disk) (ringSetup, error) {
	xc := s.cfg.XenStore
	var rs ringSetup
	readUint := func(key string, bits int) (uint64, bool, error) {
		v, err := xc.Read(d.fp + "/" + key)
		if errors.Is(err, syscall.ENOENT) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		n, err := strconv.ParseUint(string(v), 10, bits)
		if err != nil {
			return 0, false, fmt.Errorf("the front end's %s %q is not a number", key, v)
		}
		return n, true, nil
	}
	if v, err := xc.Read(d.fp + "/" + blkif.KeyProtocol); err == nil && len(v) > 0 && string(v) != blkif.ProtocolNative {
		return rs, fmt.Errorf("the front end's protocol %q is not supported (only %s)", v, blkif.ProtocolNative)
	}
	order, haveOrder, err := readUint(blkif.KeyRingPageOrder, 8)
	if err != nil {
		return rs, err
	}
	if order > MaxRingPageOrder {
		return rs, fmt.Errorf("the front end's ring-page-order %d is above max-ring-page-order %d", order, MaxRingPageOrder)
	}
	if !haveOrder {
		ref, ok, err := readUint(blkif.KeyRingRef, 32)
		if err != nil || !ok {
			return rs, fmt.Errorf("the front end published no ring-ref (%v)", err)
		}
		rs.refs = append(rs.refs, abi.GrantRef(ref))
	} else {
		for i := range 1 << order {
			ref, ok, err := readUint(blkif.RingRefKey(i), 32)
			if err != nil || !ok {
				return rs, fmt.Errorf("the front end published no %s (%v)", blkif.RingRefKey(i), err)
			}
			rs.refs = append(rs.refs, abi.GrantRef(ref))
		}
	}
	port, ok, err := readUint(blkif.KeyEventChannel, 32)
	if err != nil || !ok {
		return rs, fmt.Errorf("the front end published no event-channel (%v)", err)
	}
	rs.port = abi.EvtchnPort(port)
	p, _, _ := readUint(blkif.KeyFeaturePersistent, 8)
	rs.persistent = p == 1
	return rs, nil
}

// waitRestart waits, after a session, for the front end to start again
// (Initialising after having been elsewhere, or written anew) or for
// the disk's directories to go. last is the front end's state when the
// session ended, or StateUnknown if the session failed before it looked:
// the state found now is then the baseline, so a front end that stays
// Initialising is not retried until it writes its state again.
//
// retry, if not zero, also restarts a front end still Initialising after
// that long.
func (s *Service) waitRestart(ctx context.Context, d *disk, last blkif.State, retry time.Duration) ending {
	xc := s.cfg.XenStore
	w, err := xc.Watch(d.fp+"/"+blkif.KeyState, "vbd-restart-"+strconv.FormatUint(uint64(d.fe), 10)+"-"+strconv.FormatUint(uint64(d.devid), 10))
	if err != nil {
		return endGone
	}
	defer xc.Unwatch(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	setting, written := true, false // the watch's first event is its setting, not a write
	var retryAt time.Time
	if retry > 0 {
		retryAt = time.Now().Add(retry)
	}
	for {
		st, err := blkif.ReadState(xc, d.fp)
		if err != nil {
			return endGone
		}
		if _, err := blkif.ReadState(xc, d.bp); err != nil {
			return endGone
		}
		if last == blkif.StateUnknown {
			last = st
		}
		if st == blkif.StateInitialising && (last != st || written || !retryAt.IsZero() && time.Now().After(retryAt)) {
			return endClosed
		}
		last, written = st, false
		select {
		case <-ctx.Done():
			return endGone
		case _, ok := <-w.Events():
			if !ok {
				return endGone
			}
			written, setting = !setting, false
		case <-tick.C:
		}
	}
}
