package nstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// maxOutput bounds the output kept per process; older bytes are dropped.
const maxOutput = 4 << 20

// Proc is a process running inside a host, in a process group of its own
// (so Kill, Freeze and Thaw reach its children too). Its stdout and stderr
// are captured together.
type Proc struct {
	host *Host
	argv []string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for

	// mu guards the fields below.
	mu      sync.Mutex
	out     []byte
	dropped int           // bytes dropped from the front of out
	changed chan struct{} // closed and replaced on each write
	err     error         // from Wait, once done
}

// Start runs argv inside the host with env added to the test's own
// environment. The process is killed when ctx is done, when the test ends,
// and (through the parent-death signal) if the test process dies.
func (h *Host) Start(ctx context.Context, argv []string, env []string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("nstest: Start with no argv")
	}
	c := h.c
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errors.New("nstest: cluster is closed")
	}

	p := &Proc{host: h, argv: argv, done: make(chan struct{}), changed: make(chan struct{})}
	// ip netns exec execs argv in place, so the pid is argv's own.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = p, p
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return p.signal(syscall.SIGKILL) }
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nstest: start %s on host %d: %w", argv[0], h.Index, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Write implements io.Writer.Write for the process's output.
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, b...)
	if over := len(p.out) - maxOutput; over > 0 {
		p.out = append(p.out[:0], p.out[over:]...)
		p.dropped += over
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return len(b), nil
}

// Pid returns the process id (also its process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Host returns the host the process runs on.
func (p *Proc) Host() *Host { return p.host }

// Output returns what the process has written so far (its last 4 MiB).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

func (p *Proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.out) > n {
		return "…" + string(p.out[len(p.out)-n:])
	}
	return string(p.out)
}

// WaitOutput waits until cond holds for the output so far, re-checking
// whenever the process writes. It fails when ctx is done, or when the
// process has exited and cond still does not hold.
func (p *Proc) WaitOutput(ctx context.Context, cond func(out string) bool) error {
	for {
		p.mu.Lock()
		out, changed := string(p.out), p.changed
		p.mu.Unlock()
		if cond(out) {
			return nil
		}
		select {
		case <-changed:
		case <-p.done:
			p.mu.Lock()
			out = string(p.out)
			p.mu.Unlock()
			if cond(out) {
				return nil
			}
			return fmt.Errorf("nstest: host %d: %s exited (%s) before the awaited output", p.host.Index, p.argv[0], p.exitStatus())
		case <-ctx.Done():
			return fmt.Errorf("nstest: host %d: %s: waiting for output: %w", p.host.Index, p.argv[0], ctx.Err())
		}
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Proc) exitStatus() string {
	select {
	case <-p.done:
	default:
		return "running"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		return "exit 0"
	}
	return p.err.Error()
}

func (p *Proc) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	err := syscall.Kill(-p.cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error { return p.signal(sig) }

// Kill kills the process group with SIGKILL (stopped or not) and waits for
// the process to exit.
func (p *Proc) Kill() error {
	err := p.signal(syscall.SIGKILL)
	<-p.done
	return err
}

// Freeze stops the process group (SIGSTOP) until Thaw: the host stays on
// the network but does not answer, like a hung machine.
func (p *Proc) Freeze() error { return p.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen process group (SIGCONT).
func (p *Proc) Thaw() error { return p.signal(syscall.SIGCONT) }

// Stopped reports whether the process group is stopped (frozen): some
// member is stopped and none is running or sleeping. A shell caught in
// vfork stays in uninterruptible sleep ('D') while its stopped child
// holds it, so the leader's own state alone would never say "stopped".
func (p *Proc) Stopped() bool {
	pgid := p.Pid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	stopped := false
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The state follows the command name in parentheses, which may
		// contain spaces and parentheses itself; the group id is the
		// third field after it.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		f := strings.Fields(s[i+2:])
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		switch f[0] {
		case "T", "t":
			stopped = true
		case "R", "S":
			return false
		}
	}
	return stopped
}
