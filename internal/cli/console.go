package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/coder/websocket"
	"golang.org/x/term"

	"shi/api"
)

func init() {
	register("console", "a domain's console from any host: shi console DOM [-ro] [-force] (Ctrl-] detaches)", runConsole)
}

// detachKey is Ctrl-], as xl console and virsh console use.
const detachKey = 0x1d

func runConsole(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi console", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	ro := fs.Bool("ro", false, "read-only: watch without typing")
	force := fs.Bool("force", false, "take the writer's place from another viewer")
	fs.Usage = func() {
		fmt.Fprintln(env.Stderr, "usage: shi console DOM [-ro] [-force]   (Ctrl-] detaches)")
		fs.PrintDefaults()
	}
	// Flags may come after DOM, as the usage line shows them.
	var dom string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if args = fs.Args(); len(args) > 0 {
			if dom != "" {
				fs.Usage()
				return 2
			}
			dom, args = args[0], args[1:]
		}
	}
	if dom == "" || *ro && *force {
		fs.Usage()
		return 2
	}
	q := api.ConsoleQuery{Offset: -1, Mode: api.ConsoleRW}
	switch {
	case *ro:
		q.Mode = api.ConsoleRO
	case *force:
		q.Mode = api.ConsoleForce
	}
	cl := agentClient(env)
	base := cl.URL
	u := cl.WebSocketURL(api.ConsolePath(dom)) + "?" + q.Encode()
	hdr := http.Header{}
	cl.Authorize(hdr)
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: cl.StreamHTTP(), HTTPHeader: hdr})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			var e api.Error
			if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
				env.Errorf("console %s: %s", dom, e.Error)
				return 1
			}
		}
		env.Errorf("console %s: %v", dom, &api.NoAgentError{URL: base, Err: err})
		return 1
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	return attach(ctx, env, c, *ro)
}

// attach runs a console session on c: the terminal raw, output to
// stdout, keystrokes to c until Ctrl-], window sizes as they change.
// asked says the viewer asked to be read-only (nothing to explain).
func attach(ctx context.Context, env *Env, c *websocket.Conn, asked bool) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nl := "\n"
	if in, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
		if st, err := term.MakeRaw(int(in.Fd())); err == nil {
			defer term.Restore(int(in.Fd()), st)
			nl = "\r\n" // raw output: no newline translation
		}
		sendSize := func() {
			fd := int(in.Fd())
			if out, ok := env.Stdout.(*os.File); ok && term.IsTerminal(int(out.Fd())) {
				fd = int(out.Fd())
			}
			if w, h, err := term.GetSize(fd); err == nil {
				b, _ := json.Marshal(api.ConsoleControl{Type: api.ConsoleResizeType, Cols: w, Rows: h})
				c.Write(ctx, websocket.MessageText, b)
			}
		}
		sendSize()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for {
				select {
				case <-winch:
					sendSize()
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	say := func(format string, args ...any) { fmt.Fprintf(env.Stderr, nl+"shi: "+format+nl, args...) }

	detached := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := env.Stdin.Read(buf)
			if n > 0 {
				p := buf[:n]
				i := bytes.IndexByte(p, detachKey)
				if i >= 0 {
					p = p[:i]
				}
				if len(p) > 0 {
					if c.Write(ctx, websocket.MessageBinary, p) != nil {
						return
					}
				}
				if i >= 0 {
					close(detached)
					c.Close(websocket.StatusNormalClosure, "detached")
					cancel()
					return
				}
			}
			if err != nil {
				return // no more input: keep watching
			}
		}
	}()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			select {
			case <-detached:
				fmt.Fprint(env.Stderr, nl)
				return 0
			default:
			}
			if errors.Is(err, context.Canceled) {
				return 1
			}
			say("the console connection broke: %v", err)
			return 1
		}
		if typ == websocket.MessageBinary {
			if _, err := env.Stdout.Write(b); err != nil {
				return 1
			}
			continue
		}
		e, err := api.ParseConsoleEvent(b)
		if err != nil {
			continue
		}
		switch e.Type {
		case api.ConsoleHelloType:
			if e.Mode == api.ConsoleRO && !asked {
				say("read-only: %s", e.Reason)
			}
		case api.ConsoleModeType:
			say("read-only now: %s", e.Reason)
		case api.ConsoleEndType:
			say("%s", e.Reason)
			return 0
		}
	}
}
