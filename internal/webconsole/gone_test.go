package webconsole

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"shi/api"
	"shi/internal/browsertest"
)

// TestPageDomainGone: when the console's handshake is refused (a browser
// does not see why), the page asks the API about the domain, and for one
// that is no longer running it stops, saying so, instead of retrying.
func TestPageDomainGone(t *testing.T) {
	b := browsertest.New(t)
	mux := http.NewServeMux()
	mux.Handle("GET "+PagePath, Page())
	dom := api.Domain{ID: 9, Name: "d9", Host: "h", State: "crashed", MemoryMiB: 4}
	mux.HandleFunc("GET /v1/domains", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, 200, []api.Domain{dom}) })
	mux.HandleFunc("GET /v1/domains/d9", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, 200, dom) })
	mux.HandleFunc("POST "+api.ConsoleTicketsPath, func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 201, api.ConsoleTicket{Ticket: "t", Expires: time.Now().Add(30 * time.Second)})
	})
	mux.HandleFunc("GET /v1/domains/d9/console", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, http.StatusGone, "domain d9 (9) is crashed: its console has gone")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	const state = `JSON.stringify({console: shi.console})`
	b.Do(chromedp.Navigate(srv.URL + PagePath + "#console/d9"))
	b.Wait(`shi.console && shi.console.ended`, 20*time.Second, state)
	if s := browsertest.Eval[string](b, `document.getElementById("status").textContent`); s != "domain d9 (9) is crashed: its console has gone" {
		t.Errorf("status %q", s)
	}
	if browsertest.Eval[bool](b, `document.getElementById("reconnect").hidden`) != true {
		t.Error("an ended console offers to reconnect")
	}
}
