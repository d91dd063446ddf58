package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"shi/api"
)

// The console benchmark: a domain's program on its console's terminal,
// and a viewer on another host, against the same program on a pseudo-
// terminal whose master is bridged over TCP to the same viewer (the
// ordinary way to reach a terminal on another host without ssh). Both
// run the same script and the same line discipline:
//
//	echo ready; read x; head -c BYTES /dev/zero
//
// The viewer waits for "ready", types ROUNDS keystrokes one at a time and
// waits for each one's echo (the terminal's own, as at a shell prompt),
// then a newline, and times the BYTES that follow.

// ConsoleConfig configures RunConsole.
type ConsoleConfig struct {
	// API is the agent the viewer attaches through (its host is the
	// viewer's).
	API string
	// Token is the API token ("" on the local socket or a dev agent).
	Token string
	// Node is the host the domain runs on ("" lets placement choose).
	Node string
	// Backend, if set, is console_backend: the host serving the console.
	Backend string
	// PTYServer is the address of "shi benchtcp pty" on the domain's
	// host; "" starts one here, on loopback (a local baseline).
	PTYServer string
	Bytes     int64
	Rounds    int // keystrokes timed per run; at most 4000 (a terminal line)
	Runs      int
}

// Figure names of the console benchmark.
const (
	FigConsoleEcho   = "console echo latency"
	FigPTYEcho       = "tcp pty echo latency"
	FigConsoleStream = "console throughput"
	FigPTYStream     = "tcp pty throughput"
)

// consoleScript is what both paths run.
func consoleScript(n int64) string {
	return "echo ready; read x; head -c " + strconv.FormatInt(n, 10) + " /dev/zero"
}

// termStream is one viewer's connection: keystrokes out, output in.
type termStream interface {
	Write(p []byte) error
	Read() ([]byte, error) // io.EOF at the end
	Close()
}

// RunConsole runs the benchmark and prints the figures; the last line is
// the echo latency ratio.
func RunConsole(ctx context.Context, cfg ConsoleConfig, out io.Writer) error {
	if cfg.Rounds <= 0 || cfg.Rounds > 4000 {
		return fmt.Errorf("rounds %d: want 1..4000 (one terminal line)", cfg.Rounds)
	}
	pty := cfg.PTYServer
	if pty == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go ServePTY(ctx, ln)
		pty = ln.Addr().String()
		fmt.Fprintf(out, "tcp pty baseline on this host (%s): give -pty-server for one on the domain's host\n", pty)
	}
	cl := api.NewClient(cfg.API)
	cl.Token = cfg.Token
	var cEcho, pEcho []time.Duration
	var cRate, pRate []float64
	for i := range cfg.Runs {
		echo, rate, err := consoleRun(ctx, cl, cfg, i)
		if err != nil {
			return fmt.Errorf("console run %d: %w", i, err)
		}
		cEcho, cRate = append(cEcho, echo), append(cRate, rate)
		echo, rate, err = ptyRun(ctx, pty, cfg)
		if err != nil {
			return fmt.Errorf("tcp pty run %d: %w", i, err)
		}
		pEcho, pRate = append(pEcho, echo), append(pRate, rate)
		fmt.Fprintf(out, "run %d: echo %v console, %v tcp pty; %.1f MB/s console, %.1f MB/s tcp pty\n", i,
			cEcho[i].Round(time.Microsecond), echo.Round(time.Microsecond), cRate[i]/1e6, rate/1e6)
	}
	ce, pe := MicrosFigure(FigConsoleEcho, cEcho), MicrosFigure(FigPTYEcho, pEcho)
	cs, ps := GBFigure(FigConsoleStream, cRate), GBFigure(FigPTYStream, pRate)
	for _, f := range []Figure{cs, ps, ce, pe} {
		fmt.Fprintln(out, f.Line())
	}
	fmt.Fprintf(out, "%s / %s = %.2f\n", FigConsoleStream, FigPTYStream, cs.Median()/ps.Median())
	fmt.Fprintf(out, "%s / %s = %.2f\n", FigConsoleEcho, FigPTYEcho, ce.Median()/pe.Median())
	return nil
}

// consoleRun creates a domain running the script, measures it through
// the console endpoint and destroys it.
func consoleRun(ctx context.Context, cl *api.Client, cfg ConsoleConfig, i int) (time.Duration, float64, error) {
	name := fmt.Sprintf("bench-console-%d-%d", os.Getpid(), i)
	conf := fmt.Sprintf("name = %q\ncmd = \"/bin/sh\"\nargs = [\"-c\", %q]\nmemory = 4\n", name, consoleScript(cfg.Bytes))
	if cfg.Backend != "" {
		conf += fmt.Sprintf("console_backend = %q\n", cfg.Backend)
	}
	d, err := cl.CreateDomain(ctx, api.DomainSpec{Config: conf, Node: cfg.Node})
	if err != nil {
		return 0, 0, err
	}
	defer cl.DestroyDomain(context.Background(), strconv.FormatUint(uint64(d.ID), 10))
	u := cl.WebSocketURL(api.ConsolePath(strconv.FormatUint(uint64(d.ID), 10))) +
		"?" + api.ConsoleQuery{Offset: 0, Mode: api.ConsoleForce}.Encode()
	var c *websocket.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		hdr := http.Header{}
		cl.Authorize(hdr)
		c, _, err = websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: cl.StreamHTTP(), HTTPHeader: hdr})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return 0, 0, err
	}
	c.SetReadLimit(1 << 20)
	s := &consoleConn{ctx: ctx, c: c}
	defer s.Close()
	return measure(s, cfg.Bytes, cfg.Rounds)
}

// ptyRun measures one connection to a pty server.
func ptyRun(ctx context.Context, addr string, cfg ConsoleConfig) (time.Duration, float64, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	if _, err := fmt.Fprintf(c, "%d\n", cfg.Bytes); err != nil {
		c.Close()
		return 0, 0, err
	}
	s := &ptyConn{c: c, buf: make([]byte, 64<<10)}
	defer s.Close()
	return measure(s, cfg.Bytes, cfg.Rounds)
}

// measure runs the viewer's side of the script: the median echo of a
// keystroke, and the rate of the bytes that follow the newline.
func measure(s termStream, n int64, rounds int) (time.Duration, float64, error) {
	var seen []byte
	for !bytes.Contains(seen, []byte("ready")) {
		b, err := s.Read()
		if err != nil {
			return 0, 0, fmt.Errorf("waiting for the program: %w (got %q)", err, seen)
		}
		seen = append(seen, b...)
	}
	echoes := make([]time.Duration, 0, rounds)
	for range rounds {
		start := time.Now()
		if err := s.Write([]byte{'x'}); err != nil {
			return 0, 0, err
		}
		for got := false; !got; {
			b, err := s.Read()
			if err != nil {
				return 0, 0, fmt.Errorf("waiting for an echo: %w", err)
			}
			got = bytes.IndexByte(b, 'x') >= 0
		}
		echoes = append(echoes, time.Since(start))
	}
	start := time.Now()
	if err := s.Write([]byte{'\r'}); err != nil {
		return 0, 0, err
	}
	var zeros int64
	for zeros < n {
		b, err := s.Read()
		if err != nil {
			return 0, 0, fmt.Errorf("after %d of %d bytes: %w", zeros, n, err)
		}
		zeros += int64(len(b) - bytes.Count(b, []byte{'\r'}) - bytes.Count(b, []byte{'\n'}))
	}
	took := time.Since(start)
	return Percentile(echoes, 50), float64(n) / took.Seconds(), nil
}

type consoleConn struct {
	ctx context.Context
	c   *websocket.Conn
}

func (s *consoleConn) Write(p []byte) error { return s.c.Write(s.ctx, websocket.MessageBinary, p) }

func (s *consoleConn) Read() ([]byte, error) {
	for {
		typ, b, err := s.c.Read(s.ctx)
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageBinary {
			return b, nil
		}
		if e, err := api.ParseConsoleEvent(b); err == nil && e.Type == api.ConsoleEndType {
			return nil, fmt.Errorf("%w: %s", io.EOF, e.Reason)
		}
	}
}

func (s *consoleConn) Close() { s.c.CloseNow() }

type ptyConn struct {
	c   net.Conn
	buf []byte
}

func (s *ptyConn) Write(p []byte) error { _, err := s.c.Write(p); return err }

func (s *ptyConn) Read() ([]byte, error) {
	n, err := s.c.Read(s.buf)
	if n > 0 {
		return s.buf[:n], nil
	}
	return nil, err
}

func (s *ptyConn) Close() { s.c.Close() }

// ServePTY is the baseline's server ("shi benchtcp pty"): for each
// connection, whose first line is BYTES, it runs the script on a new
// pseudo-terminal and bridges the terminal's master to the connection.
func ServePTY(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go servePTY(c)
	}
}

func servePTY(c net.Conn) {
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n < 0 {
		return
	}
	master, slave, err := openPTY()
	if err != nil {
		return
	}
	defer master.Close()
	cmd := exec.Command("/bin/sh", "-c", consoleScript(n))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		slave.Close()
		return
	}
	slave.Close()
	go func() { io.Copy(master, r) }()
	buf := make([]byte, 4096) // what the console helper reads at a time
	for {
		k, err := master.Read(buf)
		if k > 0 {
			if _, err := c.Write(buf[:k]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// openPTY opens a pseudo-terminal pair, as the console helper does.
func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	master = os.NewFile(uintptr(m), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, err
	}
	pn, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	s, err := unix.Open("/dev/pts/"+strconv.FormatUint(uint64(pn), 10), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, os.NewFile(uintptr(s), "pts"), nil
}
