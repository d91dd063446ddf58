package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"shi/api"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/devices/blkback"
	"shi/internal/devices/console"
	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/hypervisor"
	"shi/internal/shm"
	"shi/internal/xenstore"
)

// The driver domain (DESIGN.md §2) is a domain of the agent's own, with
// its own domid, that hosts this host's back ends: consoles and disks.
// It speaks to the hypervisor through the guest library like any domain,
// so its back ends work with front ends on any host.

// driverName is the name of host's driver domain in the domain table.
func driverName(host string) string { return "driver-" + host }

// startDriver creates (or, after a restart, takes back) this host's
// driver domain and runs its console back ends until ctx ends. It retries
// until the directory takes the domain.
func (a *agent) startDriver(ctx context.Context) {
	var d directory.Domain
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		var err error
		if d, err = a.driverEntry(ctx); err == nil {
			break
		}
		a.log.Warn("driver domain: not created yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	f, err := a.hv.AddDomain(abi.DomID(d.ID), hypervisor.DomainConfig{Name: d.Name, Privileged: true, MaxMaps: 8192, MaxPorts: 8192, MaxPages: 1024})
	if err != nil {
		a.log.Error("driver domain: hypervisor", "err", err)
		return
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		a.log.Error("driver domain", "err", err)
		return
	}
	uc, err := shm.FileConn(fd)
	if err != nil {
		a.log.Error("driver domain", "err", err)
		return
	}
	hvc, err := hv.New(uc)
	if err != nil {
		a.log.Error("driver domain: connect", "err", err)
		return
	}
	defer hvc.Close()
	xsc, err := xs.Open(a.cfg.XenstoreSocket)
	if err != nil {
		a.log.Error("driver domain: xenstore", "err", err)
		return
	}
	defer xsc.Close()
	// The disk back ends watch and write XenStore on a client of their
	// own: a console's watch events never queue behind a disk's.
	dxs, err := xs.Open(a.cfg.XenstoreSocket)
	if err != nil {
		a.log.Error("driver domain: xenstore", "err", err)
		return
	}
	defer dxs.Close()
	disks := blkback.NewService(blkback.ServiceConfig{Hypervisor: hvc, XenStore: dxs,
		Logger: a.log.With("sub", "disk", "driver", d.ID)})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := disks.Run(ctx); err != nil {
			a.log.Error("driver domain: disks", "err", err)
		}
	}()
	defer func() { <-done }()
	svc := console.NewService(console.ServiceConfig{Hypervisor: hvc, XenStore: xsc,
		Logger: a.log.With("sub", "console", "driver", d.ID), EndReason: a.consoleEndReason})
	a.consoles.Store(svc)
	a.log.Info("driver domain serving consoles and disks", "dom", d.ID)
	if err := svc.Run(ctx); err != nil {
		a.log.Error("driver domain: consoles", "err", err)
	}
}

// driverEntry finds this host's driver domain in the directory, or
// creates it, with its XenStore home.
func (a *agent) driverEntry(ctx context.Context) (directory.Domain, error) {
	if d, ok := domain.DriverDomain(a.replica, a.cfg.Name); ok {
		return d, nil
	}
	now := time.Now().UnixNano()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, resp, err := a.commit.Commit(cctx, directory.DomainEntry(directory.DomainCmd{
		Op: directory.DomCreate, Reuse: true,
		Domain: directory.Domain{Name: driverName(a.cfg.Name), Host: a.cfg.Name, State: directory.StateRunning,
			Driver: true, Created: now, Updated: now},
	}))
	if err == nil && (resp.Err != "" || resp.Domain == nil) {
		err = fmt.Errorf("%s", resp.Err)
	}
	if err != nil {
		return directory.Domain{}, err
	}
	d := *resp.Domain
	home := "/local/domain/" + strconv.FormatUint(uint64(d.ID), 10)
	mine := xenstore.Perms{{Dom: d.ID}}
	var ops []xenstore.Command
	for _, kv := range [][2]string{{home, ""}, {home + "/name", d.Name}, {home + "/domid", strconv.FormatUint(uint64(d.ID), 10)}, {home + "/backend", ""}} {
		ops = append(ops, xenstore.Command{Op: xenstore.OpWrite, Path: kv[0], Value: []byte(kv[1])},
			xenstore.Command{Op: xenstore.OpSetPerms, Path: kv[0], Perms: mine})
	}
	_, resp, err = a.commit.Commit(cctx, directory.XenstoreEntry(&xenstore.Command{Op: xenstore.OpTx, Ops: ops}))
	if err == nil && resp.Xs.Err != 0 {
		err = resp.Xs.Err
	}
	return d, err
}

// consoleEndReason says why dom's console ended, for its viewers.
func (a *agent) consoleEndReason(dom uint32) string {
	ref := strconv.FormatUint(uint64(dom), 10)
	for range 20 { // the exit is recorded a moment after the ports close
		if o, ok := a.domains.Output(ref); ok && !o.Running {
			return fmt.Sprintf("domain %s (%d) ended: %s", o.Dom.Name, dom, o.Exit)
		}
		if d, ok := a.replica.Domain(dom); ok && !d.Running() {
			return fmt.Sprintf("domain %s (%d) is %s", d.Name, dom, d.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d, ok := a.replica.Domain(dom); ok {
		return fmt.Sprintf("domain %s (%d) has gone", d.Name, dom)
	}
	return fmt.Sprintf("domain %d has gone (exited or destroyed)", dom)
}

// handleConsole serves GET /v1/domains/{dom}/console (api/console.go):
// here if this host's driver domain serves the console, else through the
// agent of the host that does.
func (a *agent) handleConsole(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParseConsoleQuery(r.URL.Query())
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	ref := r.PathValue("dom")
	d, ok := a.domains.Lookup(ref)
	if !ok {
		if o, ok := a.domains.Output(ref); ok && !o.Running {
			api.WriteError(w, http.StatusGone, fmt.Sprintf("domain %s (%d) has ended (%s): it has no console any more", o.Dom.Name, o.Dom.ID, o.Exit))
			return
		}
		api.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such domain: %q", ref))
		return
	}
	if d.Driver {
		api.WriteError(w, http.StatusBadRequest, fmt.Sprintf("domain %s is a driver domain: it has no console", d.Name))
		return
	}
	host := domain.ConsoleHost(d)
	if host != a.cfg.Name {
		a.proxyConsole(w, r, d, host, q)
		return
	}
	// A domain created a moment ago: its back end starts on the
	// XenStore watch that its keys fire.
	var l *console.Log
	for deadline := time.Now().Add(5 * time.Second); ; {
		if svc := a.consoles.Load(); svc != nil {
			l, _ = svc.Log(d.ID)
		}
		if l != nil || !d.Running() || time.Now().After(deadline) || r.Context().Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l == nil {
		if !d.Running() {
			api.WriteError(w, http.StatusGone, fmt.Sprintf("domain %s (%d) is %s: its console has gone", d.Name, d.ID, d.State))
			return
		}
		api.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("domain %s (%d): its console is not served yet; try again", d.Name, d.ID))
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	serveViewer(r.Context(), c, l, q)
}

// serveViewer streams l to one viewer and its input to l.
func serveViewer(ctx context.Context, c *websocket.Conn, l *console.Log, q api.ConsoleQuery) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.SetReadLimit(64 << 10)
	v, h := l.Attach(q.Offset, q.Mode)
	defer v.Detach()
	if err := writeEvent(ctx, c, api.ConsoleHello(h.Offset, h.Mode, h.Reason)); err != nil {
		return
	}
	go func() {
		defer cancel()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				v.Input(b) // dropped keystrokes (nobody reads them) are no error
				continue
			}
			ctl, err := api.ParseConsoleControl(b)
			if err != nil {
				continue // unknown or bad controls are ignored
			}
			v.Resize(ctl.Cols, ctl.Rows)
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		u, err := v.Next(ctx, buf)
		if err != nil {
			return
		}
		switch {
		case u.N > 0:
			err = c.Write(ctx, websocket.MessageBinary, buf[:u.N])
		case u.Demoted != "":
			err = writeEvent(ctx, c, api.ConsoleEvent{Type: api.ConsoleModeType, Mode: api.ConsoleRO, Reason: u.Demoted})
		case u.Ended != "":
			writeEvent(ctx, c, api.ConsoleEvent{Type: api.ConsoleEndType, Reason: u.Ended})
			c.Close(websocket.StatusNormalClosure, "console ended")
			return
		}
		if err != nil {
			return
		}
	}
}

func writeEvent(ctx context.Context, c *websocket.Conn, e api.ConsoleEvent) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageText, b)
}

// proxyConsole joins a viewer to the console's agent on host: messages
// pass both ways unchanged; if that host goes before it said "end", the
// viewer is told so.
func (a *agent) proxyConsole(w http.ResponseWriter, r *http.Request, d directory.Domain, host string, q api.ConsoleQuery) {
	base, ok := a.hostAPI(host)
	if !ok {
		api.WriteError(w, http.StatusBadGateway, fmt.Sprintf("domain %s (%d): its console's back end host %q is not in the cluster or not alive", d.Name, d.ID, host))
		return
	}
	q.Ticket = "" // checked here; the back end's agent needs none
	u := strings.Replace(strings.TrimRight(base, "/"), "http", "ws", 1) + api.ConsolePath(strconv.FormatUint(uint64(d.ID), 10)) + "?" + q.Encode()
	dctx, dcancel := context.WithTimeout(r.Context(), 10*time.Second)
	peer, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPHeader: a.consoleHeader(r.Context()), HTTPClient: a.consoleClient()})
	dcancel()
	if err != nil {
		code, msg := http.StatusBadGateway, fmt.Sprintf("console of %s (%d) on host %s: %v", d.Name, d.ID, host, err)
		if resp != nil && resp.StatusCode >= 400 {
			code = resp.StatusCode
			var e api.Error
			if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
				msg = e.Error
			}
		}
		api.WriteError(w, code, msg)
		return
	}
	defer peer.CloseNow()
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 10)
	peer.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // viewer to back end
		defer cancel()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := peer.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}()
	// Back end to viewer. A lost host shows as a read that fails, or
	// goes quiet: membership's verdict ends the stream too.
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, ok := a.hostAPI(host); !ok {
					peer.CloseNow()
					return
				}
			}
		}
	}()
	for {
		typ, b, err := peer.Read(ctx)
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			reason := fmt.Sprintf("lost the console of %s (%d): its back end host %s is gone or unreachable", d.Name, d.ID, host)
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.StatusNormalClosure {
				reason = fmt.Sprintf("the console of %s (%d) was closed by its back end host %s", d.Name, d.ID, host)
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
			writeEvent(wctx, c, api.ConsoleEvent{Type: api.ConsoleEndType, Reason: reason})
			wcancel()
			c.Close(websocket.StatusNormalClosure, "back end lost")
			return
		}
		if err := c.Write(ctx, typ, b); err != nil {
			return
		}
		if typ == websocket.MessageText {
			if e, err := api.ParseConsoleEvent(b); err == nil && e.Type == api.ConsoleEndType {
				c.Close(websocket.StatusNormalClosure, "console ended")
				return
			}
		}
	}
}
