package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"shi/api"
	"shi/guest/xs"
	"shi/internal/nstest"
)

// viewer is one WebSocket client of a console, reading what it is sent.
type viewer struct {
	t      *testing.T
	c      *websocket.Conn
	hello  api.ConsoleEvent
	out    strings.Builder
	events []api.ConsoleEvent
}

func dialConsole(t *testing.T, ctx context.Context, base, dom, query string) *viewer {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + api.ConsolePath(dom) + "?" + query
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	v := &viewer{t: t, c: c}
	typ, b, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("hello: %v %v %q", err, typ, b)
	}
	if v.hello, err = api.ParseConsoleEvent(b); err != nil || v.hello.Type != api.ConsoleHelloType {
		t.Fatalf("hello: %q %v", b, err)
	}
	return v
}

// until reads until the output contains want (or an event of that type
// comes, for want "event:TYPE").
func (v *viewer) until(ctx context.Context, want string) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if strings.Contains(v.out.String(), want) {
			return
		}
		for _, e := range v.events {
			if "event:"+e.Type == want {
				return
			}
		}
		typ, b, err := v.c.Read(ctx)
		if err != nil {
			v.t.Fatalf("waiting for %q: %v; output %q, events %+v", want, err, v.out.String(), v.events)
		}
		if typ == websocket.MessageBinary {
			v.out.Write(b)
			continue
		}
		e, err := api.ParseConsoleEvent(b)
		if err != nil {
			v.t.Fatalf("event %q: %v", b, err)
		}
		v.events = append(v.events, e)
	}
}

func (v *viewer) send(ctx context.Context, s string) {
	v.t.Helper()
	if err := v.c.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
		v.t.Fatal(err)
	}
}

// TestConsoleEndpoint drives GET /v1/domains/{dom}/console of a dev
// agent as the contract says: hello, output, keystrokes, resize, a
// read-only viewer from an offset, a forced take-over, the end, and the
// errors before the upgrade.
func TestConsoleEndpoint(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dev, cfg.Name, cfg.APIAddr = true, "dev", "127.0.0.1:0"
	cfg.XenstoreSocket = filepath.Join(openDir(t), "xs.sock")
	cfg.ConsoleHelper = nstest.BuildShi(t) // the test binary is no shi
	info, _ := started(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	x, err := xs.Open(info.XenstoreSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if v, err := x.Read("/local/domain/1/name"); err == nil && string(v) == "driver-dev" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no driver domain")
		}
	}
	cl := api.NewClient(info.APIURL)
	if _, err := cl.CreateDomain(ctx, api.DomainSpec{Config: "name = \"sh\"\ncmd = \"/bin/sh\"\nargs = [\"-i\"]\n"}); err != nil {
		t.Fatal(err)
	}
	if fe, err := x.Directory("/local/domain/2/console"); err != nil || !strings.Contains(strings.Join(fe, " "), "backend-id") {
		t.Fatalf("console keys: %q %v", fe, err)
	}

	a := dialConsole(t, ctx, info.APIURL, "sh", "")
	if a.hello.Mode != api.ConsoleRW || a.hello.Offset != 0 {
		t.Fatalf("first viewer's hello: %+v", a.hello)
	}
	a.until(ctx, "$ ")
	a.send(ctx, "echo ws$((6*7))\r")
	a.until(ctx, "ws42")
	b, _ := json.Marshal(api.ConsoleControl{Type: api.ConsoleResizeType, Cols: 91, Rows: 33})
	a.c.Write(ctx, websocket.MessageText, b)
	time.Sleep(100 * time.Millisecond) // the size goes through XenStore
	a.send(ctx, "stty size\r")
	a.until(ctx, "33 91")

	r := dialConsole(t, ctx, info.APIURL, "2", "mode=rw&offset=5")
	if r.hello.Mode != api.ConsoleRO || r.hello.Offset != 5 || r.hello.Reason == "" {
		t.Fatalf("second viewer's hello: %+v", r.hello)
	}
	r.until(ctx, "33 91")
	if got, want := r.out.String(), a.out.String()[5:]; !strings.HasPrefix(want, got[:min(len(got), len(want))]) {
		t.Fatalf("the read-only viewer from offset 5 saw %q, the writer %q", got, a.out.String())
	}
	r.send(ctx, "echo ignored\r")

	f := dialConsole(t, ctx, info.APIURL, "sh", "mode=force")
	if f.hello.Mode != api.ConsoleRW {
		t.Fatalf("forcing viewer's hello: %+v", f.hello)
	}
	a.until(ctx, "event:mode")
	f.send(ctx, "exit 7\r")
	for _, v := range []*viewer{a, r, f} {
		v.until(ctx, "event:end")
		if e := v.events[len(v.events)-1]; !strings.Contains(e.Reason, "exit code 7") {
			t.Errorf("end: %+v", e)
		}
	}
	if strings.Contains(f.out.String(), "ignored") {
		t.Errorf("a read-only viewer's keys reached the shell: %q", f.out.String())
	}

	for q, code := range map[string]int{"nosuch?": http.StatusNotFound, "sh?mode=x": http.StatusBadRequest, "sh?offset=-3": http.StatusBadRequest} {
		dom, query, _ := strings.Cut(q, "?")
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(info.APIURL, "http")+api.ConsolePath(dom)+"?"+query, nil)
		if err == nil || resp == nil || resp.StatusCode != code {
			t.Errorf("%s: %v %v, want %d", q, err, resp, code)
		}
	}
}
