package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"shi/guest/vchan"
	"shi/guest/xs"
)

func init() {
	register("vchan", "bridge a vchan and a Unix socket, like vchan-socket-proxy (run inside a domain)", runVchan)
}

// vchanBridge is one run of "shi vchan": the flags of vchan-socket-proxy
// plus ring sizes.
type vchanBridge struct {
	env       *Env
	server    bool
	verbose   bool
	peer      vchan.DomID
	path      string
	endpoint  string // a socket path, a descriptor number, or "-"
	readMin   int
	writeMin  int
	statePath string
	x         *xs.Client
}

func runVchan(ctx context.Context, env *Env, args []string) int {
	fs := flag.NewFlagSet("shi vchan", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	mode := fs.String("m", "client", "vchan side: client or server")
	fs.StringVar(mode, "mode", "client", "same as -m")
	state := fs.String("s", "", "XenStore path to write \"running\" to once started")
	fs.StringVar(state, "state-path", "", "same as -s")
	verbose := fs.Bool("v", false, "log connections")
	readMin := fs.Int("read-min", 0, "server: minimum bytes in the ring it reads (the client writes); 0 is 1 KiB, inside the control page")
	writeMin := fs.Int("write-min", 0, "server: minimum bytes in the ring it writes; 0 is 2 KiB, inside the control page")
	fs.Usage = func() {
		fmt.Fprint(env.Stderr, `usage: shi vchan [-m client|server] [-s state-path] [-read-min N] [-write-min N] [-v] DOMID PATH SOCKET|FD|-

A bridge between a vchan and a Unix socket, interoperable with Xen's
vchan-socket-proxy in either role; run it inside a domain, whose config
says console = "direct" (it uses the guest library itself).

client: connects to the vchan domain DOMID serves under PATH.
  SOCKET  listen on a Unix socket and connect the vchan for each
          connection accepted, one after another, until killed
  FD      the same, on an inherited listening socket
  -       connect at once and relay stdin/stdout; exit when the vchan ends
server: serves a vchan for domain DOMID under PATH.
  SOCKET  connect to this Unix socket once a client connects; serve
          again under PATH after each client, until killed
  FD      relay this descriptor; exit when the vchan ends
  -       relay stdin/stdout; exit when the vchan ends

When the local side ends its input, the vchan is closed (vchan has no
half-close); when the peer closes the vchan, the local side is closed.
Larger rings (-read-min/-write-min up to 1048576) stream faster.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return 2
	}
	b := &vchanBridge{env: env, verbose: *verbose, path: fs.Arg(1), endpoint: fs.Arg(2),
		readMin: *readMin, writeMin: *writeMin, statePath: *state}
	switch *mode {
	case "server":
		b.server = true
	case "client":
	default:
		env.Errorf("vchan: -m must be client or server, not %q", *mode)
		return 2
	}
	dom, err := strconv.ParseUint(fs.Arg(0), 10, 16)
	if err != nil {
		env.Errorf("vchan: domain id %q: want a number", fs.Arg(0))
		return 2
	}
	b.peer = vchan.DomID(dom)
	for _, n := range []int{b.readMin, b.writeMin} {
		if n < 0 || n > vchan.MaxRing {
			env.Errorf("vchan: ring sizes are 0..%d bytes", vchan.MaxRing)
			return 2
		}
	}
	if err := b.run(ctx); err != nil {
		env.Errorf("vchan: %v", err)
		return 1
	}
	return 0
}

func (b *vchanBridge) logf(format string, args ...any) {
	if b.verbose {
		fmt.Fprintf(b.env.Stderr, "shi vchan: "+format+"\n", args...)
	}
}

func (b *vchanBridge) run(ctx context.Context) error {
	x, err := xs.OpenEnv()
	if err != nil {
		return fmt.Errorf("XenStore: %w", err)
	}
	defer x.Close()
	b.x = x
	var listener net.Listener
	if !b.server && b.endpoint != "-" {
		// Listen before saying "running", so a client of the socket
		// that waits for the state finds it.
		if listener, err = listenEndpoint(b.endpoint); err != nil {
			return err
		}
		defer listener.Close()
	}
	if b.statePath != "" {
		if err := x.Write(b.statePath, []byte("running")); err != nil {
			return fmt.Errorf("state path %s: %w", b.statePath, err)
		}
	}
	if b.server {
		return b.serve(ctx)
	}
	if listener == nil {
		c, err := b.dial(ctx)
		if err != nil {
			return err
		}
		return b.relay(c, stdio{})
	}
	for {
		local, err := listener.Accept()
		if err != nil {
			return err
		}
		b.logf("accepted a connection on %s", b.endpoint)
		c, err := b.dial(ctx)
		if err != nil {
			local.Close()
			return err
		}
		if err := b.relay(c, local); err != nil {
			return err
		}
	}
}

// serve is the server: a vchan for the peer, and for each client that
// connects, a connection to the local endpoint.
func (b *vchanBridge) serve(ctx context.Context) error {
	cfg := &vchan.Config{XenStore: b.x, ReadMin: b.readMin, WriteMin: b.writeMin}
	for {
		c, err := cfg.Listen(b.peer, b.path)
		if err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		err = c.WaitClient()
		stop()
		if err != nil {
			c.Close()
			return err
		}
		b.logf("vchan client %d connected under %s", b.peer, b.path)
		var local io.ReadWriteCloser
		switch {
		case b.endpoint == "-":
			local = stdio{}
		case isFD(b.endpoint):
			fd, _ := strconv.Atoi(b.endpoint)
			local = os.NewFile(uintptr(fd), "fd "+b.endpoint)
		default:
			conn, err := net.Dial("unix", b.endpoint)
			if err != nil {
				c.Close()
				return err
			}
			local = conn
		}
		if err := b.relay(c, local); err != nil {
			return err
		}
		// vchan-socket-proxy serves again only for a socket path.
		if !strings.HasPrefix(b.endpoint, "/") {
			return nil
		}
	}
}

// dial connects the vchan, waiting for the server to publish it while
// its domain exists (as vchan-socket-proxy's client does).
func (b *vchanBridge) dial(ctx context.Context) (*vchan.Conn, error) {
	cfg := &vchan.Config{XenStore: b.x}
	home := "/local/domain/" + strconv.Itoa(int(b.peer))
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := cfg.DialContext(wctx, b.peer, b.path)
		cancel()
		if err == nil {
			b.logf("connected to the vchan of domain %d under %s", b.peer, b.path)
			return c, nil
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		// Another domain's home is unreadable (EACCES) while it exists.
		if _, err := b.x.Read(home); errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("domain %d does not exist (waiting for its vchan under %s)", b.peer, b.path)
		}
	}
}

// relay copies both ways until one side ends, then ends the other: the
// end of the local input closes the vchan once what was read is written,
// the end of the vchan closes the local side once what was read is
// written there.
func (b *vchanBridge) relay(c *vchan.Conn, local io.ReadWriteCloser) error {
	// SIGUSR1 prints the vchan's shared state: what a stuck bridge sees.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer func() { signal.Stop(usr1); close(usr1) }()
	go func() {
		for range usr1 {
			fmt.Fprintf(b.env.Stderr, "shi vchan: %v\n", c)
		}
	}()
	toLocal := make(chan error, 1)
	go func() {
		_, err := io.Copy(local, c)
		local.Close()
		toLocal <- err
	}()
	_, err := io.Copy(c, local)
	c.Close()
	errLocal := <-toLocal
	b.logf("vchan with domain %d ended", b.peer)
	// One side ending makes the other fail with a closed descriptor:
	// that is the end of this connection, not an error of the bridge.
	for _, e := range []error{err, errLocal} {
		if e != nil && !errors.Is(e, net.ErrClosed) && !errors.Is(e, os.ErrClosed) &&
			!errors.Is(e, vchan.ErrPeerGone) && !errors.Is(e, syscall.EPIPE) && !errors.Is(e, syscall.ECONNRESET) {
			b.logf("relay: %v", e)
		}
	}
	return nil
}

func isFD(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// listenEndpoint listens on a Unix socket path, or adopts an inherited
// listening descriptor.
func listenEndpoint(endpoint string) (net.Listener, error) {
	if isFD(endpoint) {
		fd, _ := strconv.Atoi(endpoint)
		f := os.NewFile(uintptr(fd), "fd "+endpoint)
		defer f.Close()
		return net.FileListener(f)
	}
	if err := os.Remove(endpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", endpoint)
}

// stdio is stdin and stdout as one stream.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error {
	os.Stdin.Close()
	return os.Stdout.Close()
}
