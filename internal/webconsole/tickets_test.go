package webconsole

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/internal/ticket"
)

// server is the ticket endpoint and gate around a handler that records
// what reaches it, as the agent wires them.
func server(t *testing.T, now *time.Time) (*httptest.Server, *[]string) {
	t.Helper()
	doms := map[string]ticket.Domain{"shell": {ID: 5, Name: "shell"}, "5": {ID: 5, Name: "shell"}, "web": {ID: 6, Name: "web"}}
	tk := &Tickets{
		Store:  ticket.New(30*time.Second, 100),
		Lookup: func(ref string) (ticket.Domain, bool) { d, ok := doms[ref]; return d, ok },
		Now:    func() time.Time { return *now },
	}
	var reached []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.ConsoleTicketsPath, tk.ServeIssue)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reached = append(reached, r.URL.RequestURI())
	})
	s := httptest.NewServer(tk.Gate(mux))
	t.Cleanup(s.Close)
	return s, &reached
}

func issue(t *testing.T, s *httptest.Server, dom string) api.ConsoleTicket {
	t.Helper()
	tk, err := api.NewClient(s.URL).ConsoleTicket(t.Context(), dom)
	if err != nil {
		t.Fatalf("ticket for %s: %v", dom, err)
	}
	return tk
}

func get(t *testing.T, s *httptest.Server, path string) (int, string) {
	t.Helper()
	r, err := http.Get(s.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

func TestGate(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	s, reached := server(t, &now)

	tk := issue(t, s, "shell")
	if !tk.Expires.Equal(now.Add(30 * time.Second)) {
		t.Errorf("expires %v", tk.Expires)
	}
	// By id too; the ticket goes no further than the gate.
	if code, body := get(t, s, "/v1/domains/5/console?mode=ro&ticket="+tk.Ticket); code != 200 {
		t.Fatalf("valid ticket: %d %s", code, body)
	}
	if want := "/v1/domains/5/console?mode=ro"; len(*reached) != 1 || (*reached)[0] != want {
		t.Fatalf("reached %q, want [%q]", *reached, want)
	}
	// Used once.
	if code, body := get(t, s, "/v1/domains/5/console?ticket="+tk.Ticket); code != 401 || !strings.Contains(body, "used already") {
		t.Fatalf("reused ticket: %d %s", code, body)
	}
	// Another domain's.
	tk = issue(t, s, "web")
	if code, body := get(t, s, "/v1/domains/shell/console?ticket="+tk.Ticket); code != 401 || !strings.Contains(body, "not shell") {
		t.Fatalf("other domain's ticket: %d %s", code, body)
	}
	// Expired.
	tk = issue(t, s, "shell")
	now = now.Add(31 * time.Second)
	if code, body := get(t, s, "/v1/domains/shell/console?ticket="+tk.Ticket); code != 401 || !strings.Contains(body, "expired") {
		t.Fatalf("expired ticket: %d %s", code, body)
	}
	// Present but empty is not absent.
	if code, _ := get(t, s, "/v1/domains/shell/console?ticket="); code != 401 {
		t.Fatalf("empty ticket: %d", code)
	}
	// Without a ticket, and on other paths, the gate stands aside.
	*reached = nil
	for _, p := range []string{"/v1/domains/shell/console", "/v1/domains/shell?ticket=x", "/v1/domains/a/b/console?ticket=x"} {
		if code, _ := get(t, s, p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	if len(*reached) != 3 {
		t.Errorf("reached %q", *reached)
	}
}

func TestIssueRefusals(t *testing.T) {
	now := time.Now()
	s, _ := server(t, &now)
	for _, c := range []struct {
		ctype, body string
		code        int
	}{
		{"application/json", `{"domain":"nope"}`, 404},
		{"application/json", `{"domain":""}`, 400},
		{"application/json", `{"domain":`, 400},
		{"text/plain", `{"domain":"shell"}`, 415},
		{"", `{"domain":"shell"}`, 415},
		{"application/json; charset=utf-8", `{"domain":"shell"}`, 201},
	} {
		r, err := http.Post(s.URL+api.ConsoleTicketsPath, c.ctype, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		json.NewDecoder(r.Body).Decode(&e)
		r.Body.Close()
		if r.StatusCode != c.code {
			t.Errorf("%s %s: %d (%s), want %d", c.ctype, c.body, r.StatusCode, e.Error, c.code)
		}
	}
}

func TestPageServed(t *testing.T) {
	s := httptest.NewServer(Page())
	t.Cleanup(s.Close)
	for path, want := range map[string]string{
		"/console/":                   "xterm/xterm.js",
		"/console/console.js":         "/v1/console/tickets",
		"/console/xterm/xterm.js":     "Terminal",
		"/console/xterm/addon-fit.js": "FitAddon",
		"/console/xterm/xterm.css":    ".xterm",
	} {
		code, body := get(t, s, path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, %d bytes, want %q in it", path, code, len(body), want)
		}
	}
	if code, _ := get(t, s, "/console/xterm/README.md"); code != 404 {
		t.Errorf("the vendoring note is served (%d)", code)
	}
}

// FuzzTicketRequests feeds the ticket endpoint and the gate arbitrary
// bodies and request paths: each gets an HTTP answer, never a panic, and
// nothing but a valid ticket gets through the gate.
func FuzzTicketRequests(f *testing.F) {
	f.Add([]byte(`{"domain":"shell"}`), "/v1/domains/shell/console?ticket=abc")
	f.Add([]byte(`{"domain":5}`), "/v1/domains/%2F/console?ticket=%00")
	f.Add([]byte(`[]`), "/v1/domains//console?ticket=a&ticket=b")
	now := time.Now()
	tk := &Tickets{
		Store:  ticket.New(time.Minute, 100),
		Lookup: func(ref string) (ticket.Domain, bool) { return ticket.Domain{ID: 5, Name: "shell"}, ref == "shell" },
		Now:    func() time.Time { return now },
	}
	passed := false
	h := tk.Gate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		passed = true
		if _, ok := consoleDomain(r.URL.EscapedPath()); ok && r.URL.Query().Has("ticket") {
			panic("a console request passed the gate with its ticket: " + r.URL.String())
		}
	}))
	f.Fuzz(func(t *testing.T, body []byte, target string) {
		req, err := http.NewRequest(http.MethodPost, "http://agent"+api.ConsoleTicketsPath, strings.NewReader(string(body)))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		tk.ServeIssue(w, req)
		if w.Code != 201 && w.Code/100 != 4 {
			t.Fatalf("issue answered %d", w.Code)
		}
		req, err = http.NewRequest(http.MethodGet, "http://agent"+target, nil)
		if err != nil || !strings.HasPrefix(target, "/") {
			return
		}
		passed = false
		w = httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if dom, ok := consoleDomain(req.URL.EscapedPath()); ok && req.URL.Query().Has("ticket") && passed && !(ticket.Domain{ID: 5, Name: "shell"}).Matches(dom) {
			t.Fatalf("%s passed the gate for domain %q", target, dom)
		}
	})
}
