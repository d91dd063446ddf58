package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"shi/api"
	"shi/internal/directory"
	"shi/internal/domain"
)

// A disk export (shi disk export, or export= in a disk's entry) is the
// domain's host serving the disk over NBD on TCP: each connection is
// joined to the NBD socket the domain's helper serves the disk on, so the
// export is the domain's own front end, and every client of it shares
// that one front end (multi-conn is safe), whichever host the image is on.

// DefaultNBDPort is NBD's registered port.
const DefaultNBDPort = 10809

type exportKey struct {
	dom uint32
	dev string
}

type diskExport struct {
	ln     net.Listener
	socket string
	wg     sync.WaitGroup
	// mu guards conns.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// exports are this host's disk exports.
type exports struct {
	mu sync.Mutex
	m  map[exportKey]*diskExport
	// started are this host's running domains whose export= disks the
	// sync loop has seen to (served, or failed once and said so): a
	// domain's config never changes, so it is read once, and an export
	// stopped by hand stays stopped.
	started map[startKey]bool
}

// startKey is one life of a domain id.
type startKey struct {
	dom     uint32
	created int64
}

// handleDisks serves GET /v1/domains/{dom}/disks.
func (a *agent) handleDisks(w http.ResponseWriter, r *http.Request) {
	d, ok := a.domains.Lookup(r.PathValue("dom"))
	if !ok {
		api.WriteError(w, http.StatusNotFound, domain.ErrNoSuchDomain.Error()+": "+r.PathValue("dom"))
		return
	}
	if d.Host != a.cfg.Name {
		var out []api.Disk
		err := forward(a.hostAPI, d.Host, func(c *api.Client) (err error) {
			out, err = c.Disks(r.Context(), strconv.FormatUint(uint64(d.ID), 10))
			return err
		})
		if err != nil {
			api.WriteError(w, forwardStatus(err), err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, out)
		return
	}
	out, err := a.disksOf(d)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (a *agent) disksOf(d directory.Domain) ([]api.Disk, error) {
	ds, err := a.domains.Disks(d)
	if err != nil {
		return nil, err
	}
	out := make([]api.Disk, 0, len(ds))
	a.exports.mu.Lock()
	defer a.exports.mu.Unlock()
	for _, k := range ds {
		ad := api.Disk{Dev: k.Dev, Host: k.Host, Path: k.Path, Mode: k.Mode, Socket: k.Socket}
		if e := a.exports.m[exportKey{d.ID, k.Dev}]; e != nil {
			ad.Export = e.ln.Addr().String()
		}
		out = append(out, ad)
	}
	return out, nil
}

// handleExport serves POST and DELETE /v1/domains/{dom}/disks/{dev}/export.
func (a *agent) handleExport(w http.ResponseWriter, r *http.Request) {
	ref, dev := r.PathValue("dom"), r.PathValue("dev")
	d, ok := a.domains.Lookup(ref)
	if !ok || !d.Running() {
		api.WriteError(w, http.StatusNotFound, domain.ErrNoSuchDomain.Error()+" running: "+ref)
		return
	}
	var req api.DiskExport
	if r.Method == http.MethodPost && r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			api.WriteError(w, http.StatusBadRequest, "bad request: "+err.Error())
			return
		}
	}
	if d.Host != a.cfg.Name {
		var out api.Disk
		dom := strconv.FormatUint(uint64(d.ID), 10)
		err := forward(a.hostAPI, d.Host, func(c *api.Client) (err error) {
			if r.Method == http.MethodDelete {
				return c.UnexportDisk(r.Context(), dom, dev)
			}
			out, err = c.ExportDisk(r.Context(), dom, dev, req)
			return err
		})
		if err != nil {
			api.WriteError(w, forwardStatus(err), err.Error())
			return
		}
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNoContent)
		} else {
			api.WriteJSON(w, http.StatusOK, out)
		}
		return
	}
	key := exportKey{d.ID, dev}
	if r.Method == http.MethodDelete {
		if !a.unexport(key) {
			api.WriteError(w, http.StatusNotFound, fmt.Sprintf("disk %s of domain %s is not exported", dev, ref))
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := a.export(d, dev, req.Listen); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errExported) {
			status = http.StatusConflict
		}
		api.WriteError(w, status, err.Error())
		return
	}
	ds, err := a.disksOf(d)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for _, k := range ds {
		if k.Dev == dev {
			api.WriteJSON(w, http.StatusOK, k)
			return
		}
	}
	api.WriteError(w, http.StatusInternalServerError, "the export vanished")
}

var errExported = errors.New("already exported")

// defaultExportAddr is this host's address, NBD's port.
func (a *agent) defaultExportAddr() string {
	ip := a.cfg.BindIP
	if a.cfg.Dev || ip == "" {
		ip = "127.0.0.1"
	}
	return net.JoinHostPort(ip, strconv.Itoa(DefaultNBDPort))
}

// export starts serving d's disk dev on addr ("" for the default).
func (a *agent) export(d directory.Domain, dev, addr string) error {
	ds, err := a.domains.Disks(d)
	if err != nil {
		return err
	}
	socket := ""
	found := false
	for _, k := range ds {
		if k.Dev == dev {
			found, socket = true, k.Socket
		}
	}
	switch {
	case !found:
		return fmt.Errorf("domain %s (%d) has no disk %q", d.Name, d.ID, dev)
	case socket == "":
		return fmt.Errorf("domain %s (%d) runs with console = \"direct\": its program is its disks' front end, and no NBD socket serves %s", d.Name, d.ID, dev)
	}
	if addr == "" {
		addr = a.defaultExportAddr()
	}
	key := exportKey{d.ID, dev}
	a.exports.mu.Lock()
	defer a.exports.mu.Unlock()
	if e := a.exports.m[key]; e != nil {
		return fmt.Errorf("disk %s of domain %s is %w on %s", dev, d.Name, errExported, e.ln.Addr())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("export %s: %w", dev, err)
	}
	e := &diskExport{ln: ln, socket: socket, conns: map[net.Conn]struct{}{}}
	if a.exports.m == nil {
		a.exports.m = map[exportKey]*diskExport{}
	}
	a.exports.m[key] = e
	e.wg.Add(1)
	go e.serve()
	a.log.Info("disk exported over NBD", "dom", d.ID, "dev", dev, "addr", ln.Addr().String())
	return nil
}

// unexport stops an export.
func (a *agent) unexport(key exportKey) bool {
	a.exports.mu.Lock()
	e := a.exports.m[key]
	delete(a.exports.m, key)
	a.exports.mu.Unlock()
	if e == nil {
		return false
	}
	e.close()
	a.log.Info("disk export stopped", "dom", key.dom, "dev", key.dev)
	return true
}

func (e *diskExport) serve() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.conns == nil { // closed
			e.mu.Unlock()
			c.Close()
			return
		}
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.join(c)
			e.mu.Lock()
			delete(e.conns, c)
			e.mu.Unlock()
		}()
	}
}

// join connects c to the domain's NBD socket, waiting a little for a
// helper that has not started serving yet.
func (e *diskExport) join(c net.Conn) {
	defer c.Close()
	var u net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if u, err = net.Dial("unix", e.socket); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close so the other direction drains, then end both.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	<-done
}

func (e *diskExport) close() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.conns = nil
	e.mu.Unlock()
	e.wg.Wait()
}

// syncExports keeps exports in step with the domains of this host: a
// running domain's export= disks are served from its start, and a domain
// that has ended loses its exports.
func (a *agent) syncExports(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	defer func() {
		a.exports.mu.Lock()
		keys := slices.Collect(maps.Keys(a.exports.m))
		a.exports.mu.Unlock()
		for _, k := range keys {
			a.unexport(k)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		running := map[uint32]directory.Domain{}
		lives := map[startKey]bool{}
		for _, d := range a.replica.Domains() {
			if d.Host == a.cfg.Name && d.Running() && !d.Driver {
				running[d.ID] = d
				lives[startKey{d.ID, d.Created}] = true
			}
		}
		a.exports.mu.Lock()
		var gone []exportKey
		for k := range a.exports.m {
			if _, ok := running[k.dom]; !ok {
				gone = append(gone, k)
			}
		}
		for k := range a.exports.started {
			if !lives[k] {
				delete(a.exports.started, k)
			}
		}
		var fresh []directory.Domain
		for _, d := range running {
			if !a.exports.started[startKey{d.ID, d.Created}] {
				fresh = append(fresh, d)
			}
		}
		a.exports.mu.Unlock()
		for _, k := range gone {
			a.unexport(k)
		}
		for _, d := range fresh {
			a.startConfigExports(d)
		}
	}
}

// startConfigExports serves d's export= disks, once.
func (a *agent) startConfigExports(d directory.Domain) {
	ds, err := a.domains.Disks(d)
	if err != nil {
		return // read again at the next tick
	}
	for _, k := range ds {
		if k.Export == "" {
			continue
		}
		if err := a.export(d, k.Dev, k.Export); err != nil && !errors.Is(err, errExported) {
			a.log.Warn("disk export from the config", "dom", d.ID, "dev", k.Dev, "err", err)
		}
	}
	a.exports.mu.Lock()
	if a.exports.started == nil {
		a.exports.started = map[startKey]bool{}
	}
	a.exports.started[startKey{d.ID, d.Created}] = true
	a.exports.mu.Unlock()
}
