package agent

import (
	"io"
	"log/slog"
	"strconv"

	"shi/internal/abi"
	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/evtchn"
)

// locator finds a domain's host in the directory's domain table, for the
// hypervisor's cross-host operations. It reads the replica under
// Replica.mu while the hypervisor holds its own lock: the lock order is
// Hypervisor.mu, then Replica.mu (docs/agent.md).
type locator struct {
	r    *directory.Replica
	self string
}

var _ evtchn.Locator = locator{}

// Locate implements evtchn.Locator.Locate.
func (l locator) Locate(dom abi.DomID) (evtchn.Host, bool) {
	d, ok := l.r.Domain(uint32(dom))
	if !ok || !d.Running() {
		return "", false
	}
	if d.Host == l.self {
		return evtchn.Local, true
	}
	return evtchn.Host(d.Host), true
}

// placementHosts is the placement policy's view of the cluster.
func (a *agent) placementHosts() []domain.Host {
	var hs []domain.Host
	for _, n := range a.nodes() {
		hs = append(hs, domain.Host{Name: n.Name, Alive: n.State == "alive", MemFree: n.MemFree})
	}
	return hs
}

// hostAPI is the API URL of another host, for forwarded domain requests.
func (a *agent) hostAPI(host string) (string, bool) {
	for _, n := range a.nodes() {
		if n.Name == host && n.API != "" && n.State == "alive" {
			return n.API, true
		}
	}
	return "", false
}

// domainOutput sends a domain's stdout and stderr to the agent's log, a
// line at a time, tagged with the domain.
func (a *agent) domainOutput(d directory.Domain) io.Writer {
	return &lineLogger{log: a.log.With("domid", strconv.FormatUint(uint64(d.ID), 10), "domain", d.Name)}
}

type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := 0
		for i < len(l.buf) && l.buf[i] != '\n' {
			i++
		}
		if i == len(l.buf) {
			if len(l.buf) > 4096 { // a line that never ends
				l.log.Info(string(l.buf))
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.log.Info(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}
