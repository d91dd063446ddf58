package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"shi/api"
	"shi/internal/browsertest"
	"shi/internal/nstest"
)

// TestWebConsole opens a shell domain's console in headless Chromium
// through the agent's web page: the list shows the domain, a command
// typed into xterm.js runs in the shell and its output is read back from
// the terminal's buffer, a window resize reaches the shell's terminal,
// and a reload shows the scrollback.
func TestWebConsole(t *testing.T) {
	b := browsertest.New(t)
	cfg := DefaultConfig()
	cfg.Dev, cfg.Name, cfg.APIAddr = true, "dev", "127.0.0.1:0"
	cfg.XenstoreSocket = filepath.Join(openDir(t), "xs.sock")
	// The test binary is no shi: the shell's terminal comes from a real one.
	cfg.ConsoleHelper = nstest.BuildShi(t)
	info, _ := started(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := api.NewClient(info.APIURL).CreateDomain(ctx, api.DomainSpec{Config: "name = \"shell\"\nmemory = 16\ncmd = \"/bin/sh\"\n"}); err != nil {
		t.Fatal(err)
	}
	const state = `JSON.stringify({console: shi.console, status: document.getElementById("status").textContent, error: document.getElementById("error").textContent, text: shi.text().slice(-400)})`

	// The agent's root sends a browser to the page, which lists the domain.
	b.Do(chromedp.Navigate(info.APIURL + "/"))
	b.Wait(`document.querySelector('a[data-domain="shell"]') !== null`, 20*time.Second, state)
	if where := browsertest.Eval[string](b, `document.getElementById("where").textContent`); where != "on dev" {
		t.Errorf("header says %q, want %q", where, "on dev")
	}
	b.Screenshot("list.png")

	b.Do(chromedp.Click(chromedp.CSS(`a[data-domain="shell"]`)))
	b.Wait(`shi.console && shi.console.open && shi.console.mode === "rw"`, 20*time.Second, state)
	b.Do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")))
	b.Type("echo web$((6*7))console\n")
	b.Wait(`shi.text().includes("web42console")`, 20*time.Second, state)

	// The shell's terminal takes the browser window's size.
	b.Do(chromedp.EmulateViewport(760, 500))
	b.Wait(`shi.term.cols < 100`, 10*time.Second, `"cols " + shi.term.cols`)
	cols := browsertest.Eval[int](b, `shi.term.cols`)
	rows := browsertest.Eval[int](b, `shi.term.rows`)
	b.Type("echo size=$(stty size | tr ' ' x)=\n")
	want := fmt.Sprintf("size=%dx%d=", rows, cols)
	b.Wait(fmt.Sprintf(`shi.text().includes(%q)`, want), 20*time.Second, state)
	b.Screenshot("console.png")

	// A new page shows what the console printed before it came.
	b.Do(chromedp.Navigate("about:blank"), chromedp.Navigate(info.APIURL+"/console/#console/shell"))
	b.Wait(`shi.console && shi.console.open && shi.text().includes("web42console") && shi.text().includes("size=")`, 20*time.Second, state)
	t.Logf("after the reload: %s", browsertest.Eval[string](b, state))
	b.Screenshot("scrollback.png")

	// A dropped connection is taken up again where it stopped: nothing
	// printed twice, nothing lost.
	off := browsertest.Eval[int](b, `shi.console.offset`)
	browsertest.Eval[bool](b, `shi.drop(), true`)
	b.Wait(`shi.console.open && shi.console.mode === "rw" && shi.console.connections === 2`, 20*time.Second, state)
	b.Type("echo after$((2*3))drop\n")
	b.Wait(`shi.text().includes("after6drop")`, 20*time.Second, state)
	if n := browsertest.Eval[int](b, `shi.text().split("web42console").length - 1`); n != 1 {
		t.Errorf("after a reconnect the terminal shows the output %d times:\n%s", n, browsertest.Eval[string](b, `shi.text()`))
	}
	if text := browsertest.Eval[string](b, `shi.text()`); strings.Contains(text, "lost while disconnected") {
		t.Errorf("output lost on a reconnect at offset %d:\n%s", off, text)
	}

	// A second viewer is read-only and says why; taking over makes it
	// the writer and the first one read-only, and both see the output.
	b2 := b.NewTab()
	b2.Do(chromedp.Navigate(info.APIURL + "/console/#console/shell"))
	b2.Wait(`shi.console && shi.console.open && shi.console.mode === "ro" && shi.text().includes("web42console")`, 20*time.Second, state)
	if s := browsertest.Eval[string](b2, `document.getElementById("status").textContent`); s == "" || s == "connected" {
		t.Errorf("a read-only viewer's status: %q", s)
	}
	b2.Do(chromedp.Click(chromedp.CSS("#force")))
	b2.Wait(`shi.console && shi.console.open && shi.console.mode === "rw"`, 20*time.Second, state)
	b.Wait(`shi.console.mode === "ro" && !document.getElementById("force").hidden`, 20*time.Second, state)
	b2.Do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")))
	b2.Type("echo two$((1+1))tabs\n")
	b2.Wait(`shi.text().includes("two2tabs")`, 20*time.Second, state)
	b.Wait(`shi.text().includes("two2tabs")`, 20*time.Second, state)
	b2.Screenshot("takeover.png")
	b.Screenshot("taken-over.png")
}
