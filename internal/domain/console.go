package domain

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"shi/internal/devices/console"
	"shi/internal/directory"
	"shi/internal/xenstore"
)

// The console keys are the toolstack's part of a domain's console (the
// front end, in the domain, adds ring-ref and port; the back end, in a
// driver domain, serves it): see internal/devices/console.

// DriverDomain finds host's driver domain in the directory.
func DriverDomain(r *directory.Replica, host string) (directory.Domain, bool) {
	for _, d := range r.Domains() {
		if d.Driver && d.Host == host && d.Running() {
			return d, true
		}
	}
	return directory.Domain{}, false
}

// driverWait bounds how long a create waits for this host's driver
// domain, which its agent makes as it starts.
const driverWait = 5 * time.Second

// consoleBackend is the driver domain that serves cfg's console: the one
// of console_backend's host, else of this host. ok is false when this
// host has no driver domain (a manager without one, in tests): the domain
// then has no console. An agent with the console helper makes its driver
// domain as it starts: a domain created meanwhile waits for it, a little.
func (m *Manager) consoleBackend(ctx context.Context, cfg *Config) (drv directory.Domain, ok bool, err error) {
	host := cfg.ConsoleBackend
	if host == "" {
		d, ok := m.driverOf(ctx, m.cfg.Host)
		if !ok && m.cfg.ConsoleHelper != "" {
			m.log.Warn("no driver domain on this host yet: the domain has no console", "name", cfg.Name)
		}
		return d, ok, nil
	}
	d, ok := DriverDomain(m.cfg.Replica, host)
	if !ok {
		return d, false, fmt.Errorf("console_backend %q: no such host, or it has no driver domain running", host)
	}
	return d, true, nil
}

// driverOf finds host's driver domain. This host's agent makes its own
// as it starts (when it runs domains' helpers): a domain created
// meanwhile waits for it, a little.
func (m *Manager) driverOf(ctx context.Context, host string) (directory.Domain, bool) {
	d, ok := DriverDomain(m.cfg.Replica, host)
	for wait := time.Now().Add(driverWait); !ok && host == m.cfg.Host && m.cfg.ConsoleHelper != "" && time.Now().Before(wait) && ctx.Err() == nil; {
		time.Sleep(20 * time.Millisecond)
		d, ok = DriverDomain(m.cfg.Replica, host)
	}
	return d, ok
}

// consoleKeys are the XenStore commands that set up id's console
// directory (owned by the domain, readable by the back end) and its
// back-end directory (owned by the driver, readable by the domain).
func consoleKeys(id, drv uint32, cfg *Config) []xenstore.Command {
	fe := console.FrontPath(id)
	be := console.BackendPath(drv, id)
	feP := xenstore.Perms{{Dom: id}, {Dom: drv, Bits: xenstore.PermRead}}
	beP := xenstore.Perms{{Dom: drv}, {Dom: id, Bits: xenstore.PermRead}}
	var ops []xenstore.Command
	node := func(path, value string, perms xenstore.Perms) {
		ops = append(ops,
			xenstore.Command{Op: xenstore.OpWrite, Path: path, Value: []byte(value)},
			xenstore.Command{Op: xenstore.OpSetPerms, Path: path, Perms: perms})
	}
	d := strconv.FormatUint(uint64(drv), 10)
	node(fe, "", feP)
	node(fe+"/type", "xenconsoled", feP)
	node(fe+"/limit", "1048576", feP)
	node(fe+"/output", cfg.ConsoleMode(), feP)
	node(fe+"/backend", be, feP)
	node(fe+"/backend-id", d, feP)
	node(be, "", beP)
	node(be+"/frontend", fe, beP)
	node(be+"/frontend-id", strconv.FormatUint(uint64(id), 10), beP)
	node(be+"/online", "1", beP)
	node(be+"/state", "1", beP)
	node(be+"/protocol", "vt100", beP)
	if cfg.ConsoleLog != "" {
		node(be+"/"+console.KeyLog, cfg.ConsoleLog, beP)
	}
	return ops
}

// ConsoleHost is the host whose driver domain serves d's console.
func ConsoleHost(d directory.Domain) string {
	if cfg, _, err := configOf(d); err == nil && cfg.ConsoleBackend != "" {
		return cfg.ConsoleBackend
	}
	return d.Host
}
