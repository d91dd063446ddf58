package agent

import (
	"encoding/json"
	"fmt"
	"net/http"

	"shi/api"
)

func (a *agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/self", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Self{
			Name:           a.cfg.Name,
			Version:        Version,
			API:            a.apiURL,
			XenstoreSocket: a.cfg.XenstoreSocket,
			Dev:            a.cfg.Dev,
		})
	})
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// metrics serves Prometheus text format; each metric is described where
// it is written.
func (a *agent) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	st := a.xs.Stats()
	s := a.replica.State()
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
	}
	for _, x := range m {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", x.name, x.help, x.name, x.typ, x.name, x.v)
	}
}
