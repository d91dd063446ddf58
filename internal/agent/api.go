package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"time"

	"shi/api"
	"shi/internal/directory"
	"shi/internal/membership"
	"shi/internal/ticket"
	"shi/internal/webconsole"
)

func (a *agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/self", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.Self{
			Name:           a.cfg.Name,
			Version:        Version,
			API:            a.apiURL,
			XenstoreSocket: a.cfg.XenstoreSocket,
			Dev:            a.cfg.Dev,
		})
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, http.StatusOK, a.nodes()) })
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, http.StatusOK, a.info()) })
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("GET /v1/domains/{dom}/console", a.handleConsole)
	mux.HandleFunc("GET /v1/domains/{dom}/disks", a.handleDisks)
	mux.HandleFunc("POST /v1/domains/{dom}/disks/{dev}/export", a.handleExport)
	mux.HandleFunc("DELETE /v1/domains/{dom}/disks/{dev}/export", a.handleExport)
	dh := DomainHandler(a.domains, a.hostAPI)
	mux.Handle("/v1/domains", dh)
	mux.Handle("/v1/domains/", dh)
	if a.cluster != nil {
		mux.HandleFunc("POST /v1/internal/commit", a.member(a.cluster.ServeCommit))
		mux.HandleFunc("POST /v1/internal/readindex", a.member(a.cluster.ServeReadIndex))
		a.keyringRoutes(mux)
	}
	if a.faults != nil {
		mux.HandleFunc("POST /v1/internal/faults", a.setFaults)
		// Tests only, like the fault hook: where a stuck agent is stuck.
		mux.HandleFunc("GET /debug/goroutines", func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 8<<20)
			w.Header().Set("Content-Type", "text/plain")
			w.Write(buf[:runtime.Stack(buf, true)])
		})
	}
	// The web console: its page, and tickets for its WebSocket (checked
	// by the gate around the whole API, before any other handler).
	tickets := &webconsole.Tickets{Store: ticket.New(ticket.DefaultTTL, ticket.DefaultMax), Lookup: a.ticketDomain}
	mux.HandleFunc("POST "+api.ConsoleTicketsPath, tickets.ServeIssue)
	a.aclRoutes(mux)
	mux.Handle("GET "+webconsole.PagePath, webconsole.Page())
	mux.Handle("GET /{$}", http.RedirectHandler(webconsole.PagePath, http.StatusFound))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return a.authenticate(tickets.Gate(mux))
}

// ticketDomain finds a domain for a console ticket.
func (a *agent) ticketDomain(ref string) (ticket.Domain, bool) {
	d, ok := a.domains.Lookup(ref)
	return ticket.Domain{ID: d.ID, Name: d.Name}, ok
}

// nodes lists the hosts with their Raft roles.
func (a *agent) nodes() []api.Node {
	if a.members == nil {
		cpus, total, free := hostResources()
		return []api.Node{{Name: a.cfg.Name, Addr: "local", State: "alive", Role: "leader", CPUs: cpus, MemTotal: total, MemFree: free, Version: Version, API: a.apiURL}}
	}
	roles := map[string]string{}
	if servers, err := a.node.Configuration(); err == nil {
		for _, s := range servers {
			roles[s.ID] = "nonvoter"
			if s.Voter {
				roles[s.ID] = "voter"
			}
		}
	}
	if l := a.node.Leader(); l != "" {
		roles[l] = "leader"
	}
	var out []api.Node
	for _, m := range a.members.Members() {
		role := roles[m.Name]
		if role == "" {
			role = "none"
		}
		out = append(out, api.Node{Name: m.Name, Addr: m.Addr, State: m.State.String(), Role: role,
			CPUs: m.Meta.CPUs, MemTotal: m.Meta.MemTotal, MemFree: m.Meta.MemFree, Version: m.Meta.Version, API: m.Meta.APIURL})
	}
	return out
}

// info is the single image: live hosts' resources added up.
func (a *agent) info() api.Info {
	i := api.Info{Version: Version}
	for _, n := range a.nodes() {
		i.Hosts++
		if n.State != membership.StateAlive.String() && n.State != "alive" {
			continue
		}
		i.HostsAlive++
		i.CPUs += n.CPUs
		i.MemTotal += n.MemTotal
		i.MemFree += n.MemFree
		if n.Role == "leader" {
			i.Leader = n.Name
		}
	}
	for _, d := range a.replica.Domains() {
		i.Domains++
		if d.State == directory.StateRunning {
			i.DomainsLive++
		}
	}
	return i
}

// faultRequest sets the transport fault hook (tests only).
type faultRequest struct {
	DelayMs  float64  `json:"delay_ms"`
	JitterMs float64  `json:"jitter_ms"`
	Loss     float64  `json:"loss"`
	Block    []string `json:"block"`
	Unblock  []string `json:"unblock"`
	Reset    bool     `json:"reset"`
}

func (a *agent) setFaults(w http.ResponseWriter, r *http.Request) {
	var fr faultRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&fr); err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if fr.Reset {
		a.faults.Reset()
	}
	a.faults.SetDelay(time.Duration(fr.DelayMs*float64(time.Millisecond)), time.Duration(fr.JitterMs*float64(time.Millisecond)))
	a.faults.SetLoss(fr.Loss)
	a.faults.Block(fr.Block...)
	a.faults.Unblock(fr.Unblock...)
	api.WriteJSON(w, http.StatusOK, fr)
}

// metrics serves Prometheus text format; each metric is described where
// it is written.
func (a *agent) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	st := a.xs.Stats()
	s := a.replica.State()
	hs := a.hv.Stats()
	m := []struct {
		name, help, typ string
		v               float64
	}{
		{"shi_xenstore_connections_total", "XenStore connections accepted.", "counter", float64(st.Conns.Load())},
		{"shi_xenstore_requests_total", "XenStore requests handled.", "counter", float64(st.Requests.Load())},
		{"shi_xenstore_protocol_errors_total", "XenStore connections dropped for malformed messages.", "counter", float64(st.ProtocolErrors.Load())},
		{"shi_xenstore_dropped_events_total", "Watch events dropped because a client did not read them.", "counter", float64(st.DroppedEvents.Load())},
		{"shi_xenstore_nodes", "Nodes in the XenStore tree.", "gauge", float64(s.Len())},
		{"shi_xenstore_generation", "Generation counter of the XenStore tree.", "counter", float64(s.Generation())},
		{"shi_directory_applied_index", "Last directory log entry applied on this host.", "gauge", float64(a.replica.Applied())},
		{"shi_domains", "Domains in the cluster's domain table.", "gauge", float64(len(a.replica.Domains()))},
		{"shi_hypervisor_domains", "Domains this host's hypervisor serves.", "gauge", float64(hs.Domains)},
		{"shi_hypervisor_ports", "Open event-channel ports of this host's domains.", "gauge", float64(hs.Ports)},
		{"shi_hypervisor_pages", "Pages this host's domains share.", "gauge", float64(hs.Pages)},
		{"shi_hypervisor_maps", "Grants this host's domains map, of any host.", "gauge", float64(hs.Maps)},
		{"shi_hypervisor_remote_pins", "Pins other hosts' domains hold on this host's grants.", "gauge", float64(hs.RemotePins)},
		{"shi_hypervisor_links", "Links between this host's domains and other hosts' domains.", "gauge", float64(hs.Links)},
		{"shi_hypervisor_pending", "Domain requests waiting for another host.", "gauge", float64(hs.Pending)},
		{"go_goroutines", "Goroutines of the agent.", "gauge", float64(runtime.NumGoroutine())},
		{"process_open_fds", "Open descriptors of the agent.", "gauge", float64(openFDs())},
	}
	for _, x := range m {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", x.name, x.help, x.name, x.typ, x.name, x.v)
	}
}

// openFDs counts the agent's open descriptors.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
