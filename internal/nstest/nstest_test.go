package nstest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"shi/internal/nstest"
)

func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		os.Exit(memberChild())
	}
	os.Exit(m.Run())
}

// echoServer listens on host h's port and echoes each stream; it stops
// when the test ends.
func echoServer(t *testing.T, h *nstest.Host, port int) {
	t.Helper()
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", h.IP, port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// Waits for a talk: long where it must succeed (a loaded machine), short
// where it must fail.
const (
	mustTalk    = 10 * time.Second
	mustNotTalk = 300 * time.Millisecond
)

// talk dials from host `from` to addr and checks the echo within wait.
func talk(from *nstest.Host, addr string, wait time.Duration) error {
	return from.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, wait)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		msg := "hello from " + from.IP
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	})
}

func TestTalkCutHeal(t *testing.T) {
	c := nstest.New(t, nstest.Options{Hosts: 2})
	h0, h1 := c.Host(0), c.Host(1)
	if h0.IP != "10.77.0.1" || h1.IP != "10.77.0.2" {
		t.Fatalf("IPs %s %s", h0.IP, h1.IP)
	}
	echoServer(t, h1, 9000)
	addr := h1.IP + ":9000"
	if err := talk(h0, addr, mustTalk); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	c.Cut(1)
	if err := talk(h0, addr, mustNotTalk); err == nil {
		t.Fatal("talked over a cut link")
	}
	c.Heal(1)
	if err := talk(h0, addr, mustTalk); err != nil {
		t.Fatalf("after heal: %v", err)
	}
	// The root namespace has nothing of ours.
	out, err := exec.Command("ip", "-o", "addr").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "10.77.0.") {
		t.Fatalf("root namespace has a test address:\n%s", out)
	}
}

func TestPartition(t *testing.T) {
	c := nstest.New(t, nstest.Options{Hosts: 3})
	for i := range 3 {
		echoServer(t, c.Host(i), 9000)
	}
	reach := func(i, j int, wait time.Duration) bool { return talk(c.Host(i), c.Host(j).IP+":9000", wait) == nil }
	c.Partition([]int{0, 1}, []int{2})
	if !reach(0, 1, mustTalk) || !reach(1, 0, mustTalk) {
		t.Fatal("0 and 1 are in one group but cannot talk")
	}
	if reach(0, 2, mustNotTalk) || reach(2, 1, mustNotTalk) {
		t.Fatal("talked across the partition")
	}
	c.Unpartition()
	if !reach(0, 2, mustTalk) || !reach(2, 1, mustTalk) {
		t.Fatal("still apart after Unpartition")
	}
}

func TestFreezeThawKill(t *testing.T) {
	c := nstest.New(t, nstest.Options{Hosts: 1})
	ctx := t.Context()
	p, err := c.Host(0).Start(ctx, []string{"sh", "-c", "while :; do echo tick; sleep 0.02; done"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ticks := func(n int) func(string) bool {
		return func(out string) bool { return strings.Count(out, "tick") >= n }
	}
	if err := p.WaitOutput(ctx, ticks(1)); err != nil {
		t.Fatal(err)
	}
	if err := p.Freeze(); err != nil {
		t.Fatal(err)
	}
	// Bounded: a stop that never shows must fail the test, not hang it.
	deadline := time.Now().Add(10 * time.Second)
	for !p.Stopped() {
		if time.Now().After(deadline) {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
			t.Fatalf("process %d not stopped 10s after SIGSTOP: %q", p.Pid(), stat)
		}
		time.Sleep(time.Millisecond)
	}
	n := strings.Count(p.Output(), "tick")
	time.Sleep(100 * time.Millisecond) // five ticks' worth, while frozen
	if got := strings.Count(p.Output(), "tick"); got > n+1 {
		t.Fatalf("a frozen process ticked %d times", got-n)
	}
	if err := p.Thaw(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(ctx, ticks(n+3)); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) {
		t.Fatalf("Wait after Kill: %v", err)
	}
}

// TestCleanup: once a test ends, its namespaces and processes are gone.
func TestCleanup(t *testing.T) {
	var name string
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := nstest.New(t, nstest.Options{Hosts: 2})
		name = c.Name()
		for _, h := range c.Hosts() {
			p, err := h.Start(context.Background(), []string{"sleep", "1000"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, p.Pid())
		}
	})
	if name == "" {
		t.Skip("the cluster subtest was skipped")
	}
	assertNoNamespaces(t, name)
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("process %d survived cleanup: %v", pid, err)
		}
	}
}

func assertNoNamespaces(t *testing.T, prefix string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			t.Fatalf("namespace %q left behind", line)
		}
	}
}

// TestStaleRemoved: New removes namespaces of test processes that died.
func TestStaleRemoved(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and no -short, like nstest.New")
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-1-h0", nstest.Prefix, dead.Process.Pid)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", stale).Run() })
	nstest.New(t, nstest.Options{Hosts: 1})
	assertNoNamespaces(t, stale)
}

// TestBuildAndStart builds a small program and runs it inside hosts: it
// sees only its host's address.
func TestBuildAndStart(t *testing.T) {
	c := nstest.New(t, nstest.Options{Hosts: 2})
	bin := nstest.Build(t, "./internal/nstest/testdata/whoami")
	if again := nstest.Build(t, "./internal/nstest/testdata/whoami"); again != bin {
		t.Fatalf("built twice: %s, %s", bin, again)
	}
	for _, h := range c.Hosts() {
		p, err := h.Start(t.Context(), []string{bin}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(); err != nil {
			t.Fatalf("%v: %s", err, p.Output())
		}
		if got, want := p.Output(), "127.0.0.1\n"+h.IP+"\n"; got != want {
			t.Fatalf("host %d: whoami printed %q, want %q", h.Index, got, want)
		}
	}
}

// failingTB pretends its test failed and keeps what is logged, so that the
// cleanup's report can be checked; its cleanups run when the test calls
// them.
type failingTB struct {
	testing.TB
	logs     []string
	cleanups []func()
}

func (f *failingTB) Failed() bool            { return true }
func (f *failingTB) Cleanup(fn func())       { f.cleanups = append(f.cleanups, fn) }
func (f *failingTB) Logf(s string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(s, a...)) }

func (f *failingTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// TestOutputOnFailure: when a test fails, each process's output goes to
// the test log.
func TestOutputOnFailure(t *testing.T) {
	ftb := &failingTB{TB: t}
	c := nstest.New(ftb, nstest.Options{Hosts: 1})
	p, err := c.Host(0).Start(t.Context(), []string{"sh", "-c", "echo to-stdout; echo to-stderr >&2; exec sleep 1000"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitOutput(t.Context(), func(out string) bool { return strings.Contains(out, "to-stderr") }); err != nil {
		t.Fatal(err)
	}
	ftb.runCleanups()
	log := strings.Join(ftb.logs, "\n")
	for _, want := range []string{"host 0", "sleep 1000", "to-stdout", "to-stderr", "signal: killed"} {
		if !strings.Contains(log, want) {
			t.Fatalf("failure log lacks %q:\n%s", want, log)
		}
	}
	assertNoNamespaces(t, c.Name())
}
