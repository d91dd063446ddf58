// Package domaintest runs a one-host agent inside a test: a directory
// replica with a local committer, a XenStore server on a temporary socket
// identifying domains by their processes, a domain Manager and its HTTP
// API. Domain programs are the test binary itself, re-executed in a role
// registered with Register and dispatched by Main from TestMain.
package domaintest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shi/guest/hv"
	"shi/guest/link"
	"shi/guest/xs"
	"shi/internal/agent"
	"shi/internal/cgroup"
	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/hypervisor"
	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
)

// EnvRole selects the program a re-executed test binary runs.
const EnvRole = "SHI_TEST_DOMAIN"

// Stuck, if a program sets it, describes its state when the watchdog
// fires.
var Stuck func() string

// EnvWatchdog, a duration, makes a test domain that runs longer print
// its goroutines' stacks and exit 4.
const EnvWatchdog = "SHI_TEST_WATCHDOG"

var programs = map[string]func() error{}

// Register names a domain program; call it from init.
func Register(role string, f func() error) { programs[role] = f }

// Main runs the domain program selected by SHI_TEST_DOMAIN and exits, if
// there is one; otherwise it runs the tests.
func Main(m *testing.M) {
	if role := os.Getenv(EnvRole); role != "" {
		f := programs[role]
		if f == nil {
			fmt.Fprintf(os.Stderr, "unknown test domain %q\n", role)
			os.Exit(2)
		}
		if s := os.Getenv(EnvWatchdog); s != "" {
			// A domain that hangs says where, instead of being killed
			// silently when its test gives up.
			d, err := time.ParseDuration(s)
			if err == nil {
				time.AfterFunc(d, func() {
					buf := make([]byte, 1<<20)
					n := runtime.Stack(buf, true)
					fmt.Fprintf(os.Stderr, "domain %s: still running after %v:\n%s\n", role, d, buf[:n])
					if c, err := hv.Self(); err == nil {
						fmt.Fprintf(os.Stderr, "its links:\n%v\n", link.For(c))
					}
					if Stuck != nil {
						fmt.Fprintf(os.Stderr, "its state:\n%s\n", Stuck())
					}
					os.Exit(4)
				})
			}
		}
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "domain %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	// Agents on test hosts are killed at the end, with no chance to
	// remove their domains' cgroup directories: remove those here.
	cgroup.Sweep("shi")
	os.Exit(code)
}

// Buffer is a goroutine-safe log sink.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Exit is a recorded domain exit.
type Exit struct {
	Dom    directory.Domain
	Status domain.ExitStatus
}

// Env is a running in-test agent.
type Env struct {
	Host           string
	Replica        *directory.Replica
	Committer      directory.Committer
	Manager        *domain.Manager
	Hypervisor     *hypervisor.Hypervisor
	XenstoreSocket string
	APIURL         string
	Log            *Buffer // the agent's log
	Output         *Buffer // every domain's stdout and stderr

	mu    sync.Mutex
	exits []Exit
	wake  chan struct{}
}

// Start starts an agent for t; it stops (destroying its domains) when the
// test ends. On failure the agent's log and the domains' output are shown.
func Start(t testing.TB) *Env {
	t.Helper()
	dir, err := os.MkdirTemp("", "shi-dt")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Host: "test-host", Log: &Buffer{}, Output: &Buffer{}, wake: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(e.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	q := xenstore.DefaultQuota()
	e.Replica = directory.NewReplica(q)
	e.Committer = directory.NewLocal(e.Replica)
	e.XenstoreSocket = filepath.Join(dir, "xs.sock")
	xsl, err := net.Listen("unix", e.XenstoreSocket)
	if err != nil {
		t.Fatal(err)
	}
	// Domains may run under uids of their own (as the agent does when
	// root): they must reach the socket; Identify decides who they are.
	if err := errors.Join(os.Chmod(dir, 0o755), os.Chmod(e.XenstoreSocket, 0o666)); err != nil {
		t.Fatal(err)
	}
	apil, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.APIURL = "http://" + apil.Addr().String()
	hv := hypervisor.New(hypervisor.Config{Logger: log})
	e.Hypervisor = hv
	e.Manager, err = domain.NewManager(domain.ManagerConfig{
		Hypervisor: hv,
		Host:       e.Host, Replica: e.Replica, Committer: e.Committer, Logger: log,
		XenstoreSocket: e.XenstoreSocket, APIURL: e.APIURL,
		Output: func(d directory.Domain) io.Writer {
			return prefixWriter{e.Output, fmt.Sprintf("[dom%d %s] ", d.ID, d.Name)}
		},
		OnExit: e.onExit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	backend := &directory.Backend{R: e.Replica, C: e.Committer, Log: log, Commit: 10 * time.Second}
	srv := server.New(server.Config{Backend: backend, Logger: log, Quota: q, Identify: e.Manager.Identify})
	served := make(chan struct{})
	go func() {
		srv.Serve(ctx, xsl)
		close(served)
	}()
	hs := &http.Server{Handler: agent.DomainHandler(e.Manager, nil)}
	go hs.Serve(apil)
	t.Cleanup(func() {
		e.Manager.Close()
		hv.Close()
		hs.Close()
		cancel()
		<-served
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("agent log:\n%s", e.Log)
			t.Logf("domain output:\n%s", e.Output)
		}
	})
	return e
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	var out []byte
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			out = append(append(out, p.prefix...), line...)
		}
	}
	_, err := p.w.Write(out)
	return len(b), err
}

func (e *Env) onExit(d directory.Domain, st domain.ExitStatus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exits = append(e.exits, Exit{d, st})
	close(e.wake)
	e.wake = make(chan struct{})
}

// Config returns the config text of a test domain running role, with
// extra NAME=VALUE environment and extra config lines.
func Config(name, role string, env []string, extra ...string) string {
	args := []string{EnvRole + "=" + role}
	args = append(args, env...)
	var b strings.Builder
	// Test programs use their agent connection (fd 3) themselves.
	fmt.Fprintf(&b, "name = %q\ncmd = %q\nmemory = 4\nconsole = \"direct\"\nenv = [", name, os.Args[0])
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	b.WriteString("]\n")
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// Create starts a test domain running role.
func (e *Env) Create(t testing.TB, name, role string, env ...string) directory.Domain {
	t.Helper()
	d, err := e.Manager.Create(context.Background(), domain.Spec{Config: Config(name, role, env)})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return d
}

// WaitExit waits for the next exit of the domain named name after the
// first skip of its exits, and returns it.
func (e *Env) WaitExit(t testing.TB, name string, skip int, timeout time.Duration) Exit {
	t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		n := 0
		for _, x := range e.exits {
			if x.Dom.Name == name {
				if n == skip {
					e.mu.Unlock()
					return x
				}
				n++
			}
		}
		wake := e.wake
		e.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("domain %s did not exit within %v", name, timeout)
		}
	}
}

// WriteAsDom0 writes a XenStore node as the toolstack.
func (e *Env) WriteAsDom0(t testing.TB, path, value string) {
	t.Helper()
	_, resp, err := e.Committer.Commit(context.Background(), directory.XenstoreEntry(&xenstore.Command{Op: xenstore.OpWrite, Path: path, Value: []byte(value)}))
	if err == nil && resp.Xs.Err != 0 {
		err = resp.Xs.Err
	}
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// Helpers for domain programs.

// WaitRead watches path until it exists and returns its value.
func WaitRead(c *xs.Client, path string, timeout time.Duration) ([]byte, error) {
	w, err := c.Watch(path, "wait:"+path)
	if err != nil {
		return nil, err
	}
	defer c.Unwatch(w)
	deadline := time.After(timeout)
	for {
		v, err := c.Read(path)
		if err == nil {
			return v, nil
		}
		select {
		case <-w.Events():
		case <-deadline:
			return nil, fmt.Errorf("%s did not appear within %v: %w", path, timeout, err)
		}
	}
}

// WaitDomid reads a decimal domid from path, waiting for it.
func WaitDomid(c *xs.Client, path string, timeout time.Duration) (uint16, error) {
	v, err := WaitRead(c, path, timeout)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(v), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%s = %q: %w", path, v, err)
	}
	return uint16(n), nil
}

// ErrTimeout is what domain programs return when a peer never shows up.
var ErrTimeout = errors.New("timed out")
