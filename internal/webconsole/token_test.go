package webconsole

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"shi/api"
	"shi/internal/browsertest"
)

// TestPageAsksForToken serves the page beside an API that, as the API
// will once it requires a token, answers 401 without "Authorization:
// Bearer <token>". The page asks for the token once, keeps it in a
// cookie, sends it on every request (the ticket's too), and a new page
// uses the cookie without asking again.
func TestPageAsksForToken(t *testing.T) {
	b := browsertest.New(t)
	const token = "s3cret-token"
	var mu sync.Mutex
	seen := map[string]int{} // "path auth" -> requests
	mux := http.NewServeMux()
	mux.Handle("GET "+PagePath, Page())
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen[r.Method+" "+r.URL.Path+" "+auth]++
		mu.Unlock()
		if auth != "Bearer "+token {
			api.WriteError(w, http.StatusUnauthorized, "this API needs a token")
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/agent/self":
			api.WriteJSON(w, 200, api.Self{Name: "tokhost"})
		case "GET /v1/domains":
			api.WriteJSON(w, 200, []api.Domain{{ID: 7, Name: "d7", Host: "tokhost", State: "running", MemoryMiB: 4}})
		case "POST " + api.ConsoleTicketsPath:
			api.WriteJSON(w, 201, api.ConsoleTicket{Ticket: "t1", Expires: time.Now().Add(30 * time.Second)})
		default:
			api.WriteError(w, 404, "not here")
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// Answer the page's prompts with the token, counting them.
	var asked []string
	dialogs := chromedp.Events(b.Context(), page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			mu.Lock()
			asked = append(asked, ev.Message)
			mu.Unlock()
			ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: token})
			cancel()
		}
	}()

	const state = `JSON.stringify({cookie: document.cookie, error: document.getElementById("error").textContent, where: document.getElementById("where").textContent})`
	b.Do(chromedp.Navigate(srv.URL + PagePath))
	b.Wait(`document.querySelector('a[data-domain="d7"]') !== null`, 20*time.Second, state)
	if c := browsertest.Eval[string](b, `document.cookie`); c != "shi_token="+token {
		t.Errorf("cookie %q, want shi_token=%s", c, token)
	}
	// Opening a console asks for a ticket with the token.
	b.Do(chromedp.Click(chromedp.CSS(`a[data-domain="d7"]`)))
	b.Wait(`shi.console !== null`, 10*time.Second, state)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := seen["POST "+api.ConsoleTicketsPath+" Bearer "+token]
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ticket request with the token; requests: %v", seen)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A new page uses the cookie: no second prompt.
	b.Do(chromedp.Navigate("about:blank"), chromedp.Navigate(srv.URL+PagePath))
	b.Wait(`document.querySelector('a[data-domain="d7"]') !== null && document.getElementById("where").textContent === "on tokhost"`, 20*time.Second, state)
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 {
		t.Errorf("the page asked %d times (%q), want once", len(asked), asked)
	}
	if seen["GET /v1/domains Bearer "+token] < 2 {
		t.Errorf("requests: %v", seen)
	}
}
