package clustertest

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"shi/internal/browsertest"
)

// TestWebConsoleCrossHost opens, in headless Chromium, the web console of
// host h0 for a shell domain on h1, whose console h1 serves: the page
// lists the domain, the console WebSocket (with its one-shot ticket,
// checked on h0) is proxied to h1, a command typed in the browser runs in
// the shell, and when the domain is destroyed the page says so.
func TestWebConsoleCrossHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	b := browsertest.New(t)
	c := Start(t, Options{Hosts: 2, BootstrapExpect: 1})
	h0, h1 := c.Host(0), c.Host(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A domain created before its host's driver domain has no console.
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		ks, err := h0.XS().Directory("/local/domain")
		if err != nil {
			return false
		}
		names := map[string]bool{}
		for _, k := range ks {
			if v, err := h0.XS().Read("/local/domain/" + k + "/name"); err == nil {
				names[string(v)] = true
			}
		}
		return names["driver-h0"] && names["driver-h1"]
	}); err != nil {
		t.Fatal("driver domains never appeared")
	}
	sh := createOn(t, ctx, h1, "name = \"websh\"\ncmd = \"/bin/sh\"\nargs = [\"-i\"]\n")

	// The hosts' addresses exist only in their namespaces: the browser
	// reaches h0's agent through a forwarder on loopback.
	url := "http://" + forwardTo(t, h0) + "/console/"
	const state = `JSON.stringify({console: shi.console, error: document.getElementById("error").textContent, text: shi.text().slice(-400)})`
	// The API wants the cluster's token: the page asks for it.
	dialogs := chromedp.Events(b.Context(), page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			dctx, dcancel := context.WithTimeout(b.Context(), 10*time.Second)
			chromedp.Call(dctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: c.Token})
			dcancel()
		}
	}()
	b.Do(chromedp.Navigate(url))
	b.Wait(`document.querySelector('a[data-domain="websh"]') !== null`, 30*time.Second, state)
	if where := browsertest.Eval[string](b, `document.getElementById("where").textContent`); where != "on h0" {
		t.Errorf("header says %q, want %q", where, "on h0")
	}
	row := browsertest.Eval[string](b, `document.querySelector('a[data-domain="websh"]').closest("tr").textContent`)
	if !strings.Contains(row, "h1") {
		t.Errorf("the list's row for websh: %q, want its host h1", row)
	}
	b.Do(chromedp.Click(chromedp.CSS(`a[data-domain="websh"]`)))
	b.Wait(`shi.console && shi.console.open && shi.console.mode === "rw"`, 30*time.Second, state)
	b.Do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")))
	b.Type("echo cross$((40+2))host\n")
	b.Wait(`shi.text().includes("cross42host")`, 30*time.Second, state)
	b.Screenshot("crosshost.png")

	if err := patientAPI(h0).DestroyDomain(ctx, sh.Name); err != nil {
		t.Fatal(err)
	}
	b.Wait(`shi.console.ended && document.getElementById("status").textContent.includes("websh")`, 30*time.Second, state)
	t.Logf("the page says: %s", browsertest.Eval[string](b, `document.getElementById("status").textContent`))
	b.Screenshot("ended.png")
}

// forwardTo listens on loopback and joins each connection to h's API
// inside h's namespace; it returns the address it listens on.
func forwardTo(t *testing.T, h *Host) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	target := strings.TrimPrefix(h.URL, "http://")
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				peer, err := h.dial(ctx, "tcp", target)
				cancel()
				if err != nil {
					return
				}
				defer peer.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(peer, conn); done <- struct{}{} }()
				go func() { io.Copy(conn, peer); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}
