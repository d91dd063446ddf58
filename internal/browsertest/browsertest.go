// Package browsertest drives a headless Chromium (Debian's chromium,
// which scripts/deps.sh installs) from Go tests with chromedp, for the
// agent's web pages. Test code only: it imports testing.
//
//	b := browsertest.New(t)          // skips, saying why, without Chromium
//	b.Do(chromedp.Navigate(url))
//	s := browsertest.Eval[string](b, `shi.text()`)
//	b.Screenshot("console.png")      // into t.ArtifactDir(), path logged
//
// The page's console messages and uncaught exceptions go to t.Log, so a
// failing test shows what the page said.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Browser is one headless Chromium tab.
type Browser struct {
	t   testing.TB
	ctx context.Context
}

// Path returns the Chromium binary, or "" if there is none.
func Path() string {
	if p := os.Getenv("SHI_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a headless Chromium for the test and opens a tab; both end
// with the test. Without Chromium, or with -short, the test is skipped.
func New(t testing.TB) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("a browser test: skipped with -short")
	}
	path := Path()
	if path == "" {
		t.Skip("no Chromium: scripts/deps.sh installs Debian's chromium (or set SHI_CHROMIUM to a Chrome binary)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Root cannot use Chromium's sandbox; the pages are our own.
		chromedp.NoSandbox,
		chromedp.WindowSize(1000, 640),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		chromedp.Cancel(cctx)
		cancel()
		acancel()
	})
	// The first Run starts the browser and binds it to ctx, which has no
	// deadline: later actions get theirs from Do's timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: start %s: %v", path, err)
	}
	b := &Browser{t: t, ctx: ctx}
	b.logConsole(ctx, "browser")
	return b
}

// NewTab opens another tab of the same browser; it closes with the test.
func (b *Browser) NewTab() *Browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("browsertest: new tab: %v", err)
	}
	b.logConsole(ctx, "tab")
	return &Browser{t: b.t, ctx: ctx}
}

// logConsole sends the console messages of ctx's tab to the test log.
func (b *Browser) logConsole(ctx context.Context, who string) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			logf(b.t, "%s %s: %s", who, m.Type, m.Text)
		}
	}()
}

// logf logs unless the test has ended (t.Log then panics).
func logf(t testing.TB, format string, args ...any) {
	defer func() { recover() }()
	t.Logf(format, args...)
}

// Context is the tab's chromedp context, for actions Do does not cover.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs actions in the tab, failing the test on error or after a
// minute.
func (b *Browser) Do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// Type types text into the focused element of the tab as a keyboard
// does: one keydown carrying the character (which the page sees as
// keydown, keypress and input) and one keyup per key; "\n" is Enter.
// chromedp.SendKeys also sends a separate "char" event, which a page
// that handles keydown itself, as xterm.js does, takes as a second key.
func (b *Browser) Type(text string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	for _, r := range text {
		var down, up *input.DispatchKeyEventParams
		var chars string
		for _, p := range kb.Encode(r) {
			switch p.Type {
			case input.DispatchKeyEventTypeKeyDown:
				down = p
			case input.DispatchKeyEventTypeChar:
				chars = p.Text
			case input.DispatchKeyEventTypeKeyUp:
				up = p
			}
		}
		if down == nil || up == nil {
			b.t.Fatalf("browser: no key for %q", r)
		}
		if down.Key == "Enter" {
			chars = "\r"
		}
		down.Text, down.UnmodifiedText = chars, chars
		for _, p := range []*input.DispatchKeyEventParams{down, up} {
			if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, *p); err != nil {
				b.t.Fatalf("browser: type %q: %v", r, err)
			}
		}
	}
}

// Eval evaluates a JavaScript expression in the page and returns its
// value, failing the test on error.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// Wait polls the JavaScript expression until it is truthy, failing the
// test with what describe says (an expression too) after timeout.
func (b *Browser) Wait(expr string, timeout time.Duration, describe string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		what := "?"
		if describe != "" {
			dctx, dcancel := context.WithTimeout(b.ctx, 5*time.Second)
			defer dcancel()
			if s, derr := chromedp.Run(dctx, chromedp.Evaluate[string](describe)); derr == nil {
				what = s
			}
		}
		b.Screenshot("failure.png")
		b.t.Fatalf("browser: %s not true within %v (%v); page: %s", expr, timeout, err, what)
	}
}

// Screenshot saves a PNG of the tab's viewport as name in the test's
// artifact directory (kept with go test -artifacts) and logs its path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Errorf("browser: screenshot: %v", err)
		return ""
	}
	dir := artifactDir(b.t)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("browser: screenshot: %v", err)
		return ""
	}
	b.t.Logf("screenshot: %s (%d bytes)", p, len(png))
	return p
}

// artifactDir is t.ArtifactDir where the test type has one.
func artifactDir(t testing.TB) string {
	if a, ok := t.(interface{ ArtifactDir() string }); ok {
		return a.ArtifactDir()
	}
	return t.TempDir()
}
