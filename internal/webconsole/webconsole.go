// Package webconsole is the agent's web console: a page that lists the
// cluster's domains and opens any domain's console in the browser with
// xterm.js, served from the binary (page/xterm, vendored; no CDN), and the
// one-shot tickets that let the page open the console WebSocket
// (GET /v1/domains/{dom}/console, served by the console endpoint, which
// proxies to the back end's host) without headers.
//
// The page speaks only the public API: GET /v1/domains for the list,
// POST /v1/console/tickets for a ticket, then the WebSocket. Where the API
// answers 401 (a token, once it requires one), the page asks for the token
// once, keeps it in a cookie and sends it as "Authorization: Bearer" on
// its requests.
package webconsole

import (
	"embed"
	"io/fs"
	"net/http"
)

// PagePath is where the page is served.
const PagePath = "/console/"

//go:embed page/index.html page/console.js page/console.css
//go:embed page/xterm/xterm.js page/xterm/xterm.css page/xterm/addon-fit.js
//go:embed page/xterm/LICENSE.xterm page/xterm/LICENSE.addon-fit
var pageFS embed.FS

// Page serves the page and its assets under PagePath.
func Page() http.Handler {
	sub, err := fs.Sub(pageFS, "page")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(PagePath, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything comes from this agent: scripts, styles, and the
		// WebSocket (same origin). xterm.js adds <style> elements, hence
		// 'unsafe-inline' for styles only. No framing, so keystrokes
		// cannot be steered by another site's page.
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files carry no dates; an agent upgrade must not leave
		// an old script in a browser's cache.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
