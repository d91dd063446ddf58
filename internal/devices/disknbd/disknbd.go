// Package disknbd serves a domain's disks to its plain programs: the
// console helper, inside the domain, opens each disk named in its
// environment (SHI_DISK_<DEV>=nbd+unix:///<dev>?socket=PATH) with the
// blkif front end and serves it as an NBD export on that Unix socket, so
// qemu-img, nbdcopy or nbdinfo in the domain use a disk whose back end
// may be on another host. The agent's "shi disk export" proxies TCP
// connections to the same socket.
package disknbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"

	"shi/guest/blkfront"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/nbd"
)

// EnvPrefix starts the variables that name the disks.
const EnvPrefix = "SHI_DISK_"

// Target is one disk to serve: its device name and socket path.
type Target struct {
	Dev    string
	Socket string
}

// Targets finds the disks named in env.
func Targets(env []string) ([]Target, error) {
	var out []Target
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		t, err := ParseURI(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// ParseURI reads an nbd+unix URI as the launcher writes it.
func ParseURI(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "nbd+unix" {
		return Target{}, fmt.Errorf("%q is not an nbd+unix URI", s)
	}
	t := Target{Dev: strings.TrimPrefix(u.Path, "/"), Socket: u.Query().Get("socket")}
	if t.Dev == "" || t.Socket == "" || strings.Contains(t.Dev, "/") {
		return Target{}, fmt.Errorf("%q: want nbd+unix:///DEV?socket=PATH", s)
	}
	return t, nil
}

// Serving is the disks a helper serves.
type Serving struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	disks  []*blkfront.Disk
}

// Serve opens every target's disk and serves it on its socket until
// Close. A disk that cannot be opened is reported in the error and left
// out; the others are served.
func Serve(hvc *hv.Conn, xsc *xs.Client, targets []Target, logf func(format string, args ...any)) (*Serving, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Serving{cancel: cancel}
	var errs []error
	for _, t := range targets {
		d, err := blkfront.Open(hvc, xsc, t.Dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("disk %s: %w", t.Dev, err))
			continue
		}
		srv, err := nbd.NewServer(nbd.Export{Name: t.Dev, Description: "shi disk " + t.Dev, Backend: d,
			MinBlock: uint32(d.SectorSize()),
			// Every connection shares the one front end, whose flush
			// covers every write it completed.
			MultiConn: true})
		if err != nil {
			d.Close()
			errs = append(errs, fmt.Errorf("disk %s: %w", t.Dev, err))
			continue
		}
		srv.Logf = logf
		os.Remove(t.Socket)
		ln, err := net.Listen("unix", t.Socket)
		if err != nil {
			d.Close()
			errs = append(errs, fmt.Errorf("disk %s: %w", t.Dev, err))
			continue
		}
		s.disks = append(s.disks, d)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, net.ErrClosed) && logf != nil {
				logf("disk %s: %v", t.Dev, err)
			}
		}()
	}
	return s, errors.Join(errs...)
}

// Close stops serving and closes the disks (their back ends flush).
func (s *Serving) Close() error {
	s.cancel()
	s.wg.Wait()
	var errs []error
	for _, d := range s.disks {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

var _ io.Closer = (*Serving)(nil)
