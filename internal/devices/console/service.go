package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"shi/guest/hv"
	"shi/guest/xs"
)

// ServiceConfig configures the console back ends of one driver domain.
type ServiceConfig struct {
	// Hypervisor is the driver domain's connection to its agent.
	Hypervisor *hv.Conn
	// XenStore is a client that may read the front ends' console
	// directories and write the back-end directories.
	XenStore *xs.Client
	Logger   *slog.Logger
	// EndReason says, for a person, why dom's console ended (it exited,
	// crashed, was destroyed); nil: "the domain has gone".
	EndReason func(dom uint32) string
}

// endedKept is how many ended consoles stay readable (scrollback and the
// reason), for a viewer that comes late.
const endedKept = 32

// Service runs the console back ends of one driver domain: one per
// directory under BackendDir(driver), which the toolstack writes when it
// creates a domain whose console this driver serves.
type Service struct {
	cfg    ServiceConfig
	driver uint32

	// mu guards the fields below.
	mu      sync.Mutex
	running map[uint32]*Log
	ended   []endedLog // oldest first
}

type endedLog struct {
	dom uint32
	log *Log
}

// NewService returns a service for the driver domain behind cfg.Hypervisor.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, driver: uint32(cfg.Hypervisor.DomID()), running: map[uint32]*Log{}}
}

// Log returns dom's console: running, or ended lately.
func (s *Service) Log(dom uint32) (*Log, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.running[dom]; ok {
		return l, true
	}
	for i := len(s.ended) - 1; i >= 0; i-- {
		if s.ended[i].dom == dom {
			return s.ended[i].log, true
		}
	}
	return nil, false
}

// Run serves consoles until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	err := s.cfg.XenStore.WatchDir(ctx, BackendDir(s.driver), "console-backends", 5*time.Second, func(doms []string, err error) {
		if err != nil {
			s.cfg.Logger.Warn("console: list back ends", "err", err)
			return
		}
		for _, name := range doms {
			id, err := strconv.ParseUint(name, 10, 16)
			if err != nil {
				continue
			}
			dom := uint32(id)
			s.mu.Lock()
			_, have := s.running[dom]
			s.mu.Unlock()
			if have {
				continue
			}
			l, err := s.newLog(dom)
			if err != nil {
				s.cfg.Logger.Warn("console: back end", "dom", dom, "err", err)
			}
			s.mu.Lock()
			s.running[dom] = l
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(ctx, dom, l)
			}()
		}
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// newLog builds dom's Log from its keys: the front end's limit and the
// back end's transcript path. A transcript that cannot be opened is
// reported and done without.
func (s *Service) newLog(dom uint32) (*Log, error) {
	xc := s.cfg.XenStore
	limit := DefaultLimit
	if v, err := xc.Read(FrontPath(dom) + "/limit"); err == nil {
		if n, err := parseUint("limit", v, 32); err == nil && n > 0 {
			limit = int(min(n, MaxLimit))
		}
	}
	var err error
	var tr *os.File
	if p, rerr := xc.Read(BackendPath(s.driver, dom) + "/" + KeyLog); rerr == nil && len(p) > 0 {
		path := string(p)
		if !filepath.IsAbs(path) {
			err = fmt.Errorf("console_log %q is not an absolute path", path)
		} else if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			tr, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		}
	}
	if tr == nil {
		return NewLog(limit, 0, nil, nil), err
	}
	return NewLog(limit, 0, nil, tr), err
}

// serve connects to dom's front end once it has published its ring and
// port, runs it, and ends the Log when the domain goes.
func (s *Service) serve(ctx context.Context, dom uint32, l *Log) {
	log := s.cfg.Logger.With("dom", dom)
	err := s.connectAndRun(ctx, dom, l)
	if ctx.Err() != nil {
		l.End("the console's back end stopped (its agent is shutting down)")
	} else {
		reason := "the domain has gone"
		if s.cfg.EndReason != nil {
			reason = s.cfg.EndReason(dom)
		}
		if err != nil && !errors.Is(err, ErrPeerGone) && !errors.Is(err, errGone) {
			log.Warn("console back end failed", "err", err)
			reason = fmt.Sprintf("%s (console back end: %v)", reason, err)
		}
		l.End(reason)
		// The domain is gone: its back-end directory goes too.
		s.cfg.XenStore.Rm(BackendDir(s.driver) + "/" + strconv.FormatUint(uint64(dom), 10))
	}
	s.mu.Lock()
	delete(s.running, dom)
	s.ended = append(s.ended, endedLog{dom, l})
	if len(s.ended) > endedKept {
		s.ended = slices.Delete(s.ended, 0, len(s.ended)-endedKept)
	}
	s.mu.Unlock()
}

// errGone means the domain went before it published its ring.
var errGone = errors.New("console: the domain went before its console was set up")

func (s *Service) connectAndRun(ctx context.Context, dom uint32, l *Log) error {
	xc := s.cfg.XenStore
	fe := FrontPath(dom)
	w, err := xc.Watch(fe, "console-fe-"+strconv.FormatUint(uint64(dom), 10))
	if err != nil {
		return err
	}
	defer xc.Unwatch(w)
	var ref, port uint64
	for {
		rv, err1 := xc.Read(fe + "/ring-ref")
		pv, err2 := xc.Read(fe + "/port")
		if err1 == nil && err2 == nil {
			if ref, err = parseUint("ring-ref", rv, 32); err != nil {
				return err
			}
			if port, err = parseUint("port", pv, 32); err != nil {
				return err
			}
			break
		}
		if _, err := xc.Read("/local/domain/" + strconv.FormatUint(uint64(dom), 10) + "/domid"); errors.Is(err, syscall.ENOENT) {
			return errGone
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.Events():
		case <-time.After(time.Second):
		}
	}
	b, err := ConnectBack(s.cfg.Hypervisor, dom, uint32(ref), uint32(port))
	if err != nil {
		return err
	}
	defer b.Close()
	l.SetSink(sink{b, xc, BackendPath(s.driver, dom) + "/" + KeySize})
	defer l.SetSink(nil)
	return b.Run(ctx, l)
}

// sink is a Back plus the XenStore key its window size goes to.
type sink struct {
	*Back
	xs   *xs.Client
	size string
}

// Resize implements Sink.Resize.
func (s sink) Resize(cols, rows int) error {
	return s.xs.Write(s.size, []byte(FormatSize(cols, rows)))
}

// FormatSize renders a window size as KeySize holds it.
func FormatSize(cols, rows int) string { return strconv.Itoa(cols) + "x" + strconv.Itoa(rows) }

// ParseSize reads a KeySize value.
func ParseSize(v []byte) (cols, rows int, err error) {
	c, r, ok := strings.Cut(string(v), "x")
	if ok {
		cols, err1 := strconv.Atoi(c)
		rows, err2 := strconv.Atoi(r)
		if err1 == nil && err2 == nil && cols > 0 && rows > 0 && cols <= 10000 && rows <= 10000 {
			return cols, rows, nil
		}
	}
	return 0, 0, fmt.Errorf("console: window size %q is not COLSxROWS", v)
}
