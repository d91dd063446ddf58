package agent

import (
	"io"
	"log/slog"
	"strconv"

	"shi/internal/directory"
	"shi/internal/domain"
)

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
