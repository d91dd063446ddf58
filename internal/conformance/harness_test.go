package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shi/internal/abi"
	"shi/internal/nstest"
	"shi/internal/xenstore/wire"
)

var shared struct {
	once  sync.Once
	dir   string
	agent *agent
	proxy *proxy
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if a := shared.agent; a != nil {
		if err := a.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "conformance: stopping the shared agent: %v\n%s", err, a.stderr.String())
			code = 1
		}
	}
	if p := shared.proxy; p != nil {
		p.close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// realProcesses skips the test with -short: everything here runs real
// processes.
func realProcesses(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("conformance tests run real processes; skipped with -short")
	}
}

// sharedAgent returns the package's agent and the proxy in front of it,
// starting them on first use.
func sharedAgent(t *testing.T) (*agent, *proxy) {
	t.Helper()
	realProcesses(t)
	shi := nstest.BuildShi(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "shi-conformance-")
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		a, err := startAgent(shi, filepath.Join(dir, "xenstored.sock"))
		if err != nil {
			shared.err = err
			return
		}
		shared.agent = a
		shared.proxy, shared.err = startProxy(filepath.Join(dir, "proxy.sock"), a.socket)
	})
	if shared.err != nil {
		t.Fatalf("starting the shared agent: %v", shared.err)
	}
	return shared.agent, shared.proxy
}

// agent is a running `shi agent -dev`.
type agent struct {
	cmd    *exec.Cmd
	socket string // as the agent printed it
	url    string
	stdout []string // the lines it printed until ready
	lines  *lineWriter
	stderr *syncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// startAgent runs `shi agent -dev` on socket with a free API port and waits
// for its two lines, XENSTORED_PATH=... and SHI_AGENT=....
func startAgent(shi, socket string) (*agent, error) {
	a := &agent{stderr: &syncBuffer{}, exited: make(chan struct{})}
	a.cmd = exec.Command(shi, "agent", "-dev", "-xenstore-socket", socket, "-api", "127.0.0.1:0")
	a.cmd.Stderr = a.stderr
	lw := &lineWriter{lines: make(chan string, 64)}
	a.cmd.Stdout = lw
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		a.err = a.cmd.Wait() // returns once stdout is copied to lw
		close(a.exited)
	}()
	timeout := time.After(60 * time.Second)
	for a.socket == "" || a.url == "" {
		select {
		case l := <-lw.lines:
			a.stdout = append(a.stdout, l)
			if v, ok := strings.CutPrefix(l, "XENSTORED_PATH="); ok {
				a.socket = v
			} else if v, ok := strings.CutPrefix(l, "SHI_AGENT="); ok {
				a.url = v
			}
		case <-a.exited:
			return nil, fmt.Errorf("agent exited before it was ready (%v); stdout %q, stderr:\n%s", a.err, a.stdout, a.stderr)
		case <-timeout:
			a.cmd.Process.Kill()
			<-a.exited
			return nil, fmt.Errorf("agent not ready after 60 s; stdout %q, stderr:\n%s", a.stdout, a.stderr)
		}
	}
	a.lines = lw
	return a, nil
}

// lineWriter collects a process's stdout as lines: the first ones on a
// channel (the ready lines), the rest in a buffer that never blocks.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   chan string
	later   []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		select {
		case w.lines <- l:
		default:
			w.later = append(w.later, l)
		}
	}
}

// extraLines returns the lines printed after the ready lines.
func (a *agent) extraLines() []string {
	a.lines.mu.Lock()
	defer a.lines.mu.Unlock()
	var out []string
	for {
		select {
		case l := <-a.lines.lines:
			out = append(out, l)
		default:
			return append(out, a.lines.later...)
		}
	}
}

// stop sends sig (SIGTERM by default) and waits for a clean exit.
func (a *agent) stop(sig ...os.Signal) error {
	s := os.Signal(syscall.SIGTERM)
	if len(sig) > 0 {
		s = sig[0]
	}
	a.cmd.Process.Signal(s)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		return fmt.Errorf("agent did not exit within 30 s of %v", s)
	}
	return a.err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proxy forwards XenStore connections to the agent and records every
// message that crosses, so that a failing step can show its exact bytes.
type proxy struct {
	socket string
	ln     net.Listener

	mu  sync.Mutex
	log []string
}

func startProxy(socket, target string) (*proxy, error) {
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	p := &proxy{socket: socket, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p, nil
}

func (p *proxy) close() { p.ln.Close() }

var connSeq struct {
	mu sync.Mutex
	n  int
}

func (p *proxy) serve(c net.Conn, target string) {
	defer c.Close()
	s, err := net.Dial("unix", target)
	if err != nil {
		p.record("proxy: dial agent: %v", err)
		return
	}
	defer s.Close()
	connSeq.mu.Lock()
	connSeq.n++
	id := connSeq.n
	connSeq.mu.Unlock()
	done := make(chan struct{}, 2)
	pump := func(dst, src net.Conn, dir string) {
		defer func() { done <- struct{}{} }()
		r := bufio.NewReader(src)
		for {
			m, err := wire.Read(r)
			if err != nil {
				if err != io.EOF {
					p.record("conn %d %s %v", id, dir, err)
				}
				// Half-close so the other side sees EOF as it would.
				if uc, ok := dst.(*net.UnixConn); ok {
					uc.CloseWrite()
				}
				return
			}
			p.record("conn %d %s %s", id, dir, describe(m))
			if err := m.Write(dst); err != nil {
				return
			}
		}
	}
	go pump(s, c, "->")
	go pump(c, s, "<-")
	<-done
	<-done
}

// describe renders a message with its whole payload (up to 200 bytes).
func describe(m wire.Msg) string {
	p := m.Payload
	more := ""
	if len(p) > 200 {
		p, more = p[:200], fmt.Sprintf("...(+%d)", len(m.Payload)-200)
	}
	return fmt.Sprintf("%s req=%d tx=%d len=%d %q%s", abi.XSTypeName(m.Type), m.ReqID, m.TxID, len(m.Payload), p, more)
}

func (p *proxy) record(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, fmt.Sprintf(format, a...))
}

// mark returns a position in the log for since.
func (p *proxy) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.log)
}

// since returns the log from mark on, at most the last max lines.
func (p *proxy) since(mark, max int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.log[mark:]
	skipped := ""
	if len(l) > max {
		skipped = fmt.Sprintf("  (%d earlier messages)\n", len(l)-max)
		l = l[len(l)-max:]
	}
	return skipped + "  " + strings.Join(l, "\n  ")
}

// tool returns the path of a program the tests need, failing the test (not
// skipping it) when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			t.Fatalf("%s is missing: run scripts/deps.sh", name)
		}
		return name
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run scripts/deps.sh", name)
	}
	return p
}

// result is what a finished process left.
type result struct {
	stdout, stderr string
	code           int
}

// run runs argv with extra environment and returns its output and exit
// code; it fails the test only when the program cannot run at all.
func run(t *testing.T, ctx context.Context, env []string, argv ...string) result {
	t.Helper()
	r, err := runE(ctx, env, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runE is run for goroutines other than the test's own, which may not
// call t.Fatal.
func runE(ctx context.Context, env []string, argv ...string) (result, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		return r, fmt.Errorf("%q: %v", argv, err)
	}
	return r, nil
}

// cleanEnv is the environment with the variables that choose a XenStore
// removed, so a developer's own settings cannot leak in.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "XENSTORED_PATH=") || strings.HasPrefix(kv, "XENSTORED_RUNDIR=") || strings.HasPrefix(kv, "SHI_AGENT=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
