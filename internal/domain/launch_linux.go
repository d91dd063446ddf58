package domain

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"shi/internal/directory"
)

// launch starts a domain's process: a new session (so also its own
// process group), its agent connection as fd 3, its environment, and
// SIGKILL should the agent die. The process is recorded before mu is
// released, so Identify knows it from its first instruction.
func (m *Manager) launch(d directory.Domain, cfg *Config, spec Spec, path string, conn *os.File, console bool) error {
	env := []string{"PATH=" + os.Getenv("PATH")}
	env = append(env, m.memLimitEnv(cfg)...) // before cfg.Env, which may set its own
	env = append(env, cfg.Env...)
	xen, err := m.xenLibsEnv(cfg)
	if err != nil {
		return err
	}
	env = append(env, xen...) // after cfg.Env: the last of a name wins
	disks, err := m.diskEnv(d, cfg, console)
	if err != nil {
		return err
	}
	env = append(env, disks...)
	env = append(env,
		EnvXenstore+"="+m.cfg.XenstoreSocket,
		EnvAgent+"="+m.cfg.APIURL,
		EnvDomID+"="+strconv.FormatUint(uint64(d.ID), 10),
		EnvFD+"=3",
	)
	dir := "/"
	if fi, err := os.Stat(spec.Dir); spec.Dir != "" && err == nil && fi.IsDir() {
		dir = spec.Dir
	}
	// Output goes to the tail the manager keeps and to the agent's log.
	tail := &outputTail{}
	var out io.Writer = tail
	if m.cfg.Output != nil {
		out = io.MultiWriter(tail, m.cfg.Output(d))
	}
	// Output goes through a pipe of ours rather than exec's, whose Wait
	// would also wait for every process that inherited it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	// When the agent is root, a domain runs under a uid of its own
	// (DomainUID), so it can neither signal nor ptrace other processes nor
	// reopen anyone's descriptors through /proc, and Identify knows it by
	// its uid. Its program is executed through a descriptor the agent
	// opened, so it need not be reachable by that uid's path permissions.
	var cred *syscall.Credential
	extra := []*os.File{conn}
	execPath := path
	if uid, ok := DomainUID(d.ID); ok {
		cred = &syscall.Credential{Uid: uid, Gid: uid, NoSetGroups: true}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o001 == 0 || !worldSearchable(filepathDir(path)) {
			// Not reachable by that uid (a test binary in a private
			// directory): execute it through a descriptor of ours. Its
			// process name then reads as the descriptor's number.
			bin, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("open %s: %w", path, err)
			}
			defer bin.Close()
			extra = append(extra, bin)
			execPath = "/proc/self/fd/" + strconv.Itoa(3+len(extra)-1)
		}
		if !worldSearchable(dir) {
			dir = "/"
		}
	}
	args := append([]string{cfg.Cmd}, cfg.Args...)
	if console && m.usesConsoleHelper(cfg) {
		// The helper runs first, holds the agent connection and
		// starts the program on a terminal (devices/console.RunHelper).
		helper := m.cfg.ConsoleHelper
		args = append([]string{"shi", "console-helper", execPath}, args...)
		execPath = helper
		if cred != nil && !reachable(helper) {
			bin, err := os.Open(helper)
			if err != nil {
				return fmt.Errorf("open %s: %w", helper, err)
			}
			defer bin.Close()
			extra = append(extra, bin)
			execPath = "/proc/self/fd/" + strconv.Itoa(3+len(extra)-1)
		}
	}
	cmd := &exec.Cmd{
		Path:       execPath,
		Args:       args,
		Env:        env,
		Dir:        dir,
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Credential: cred,
			Setsid:     true,
			Pdeathsig:  syscall.SIGKILL,
			// A network namespace of its own (only a loopback, down):
			// a domain reaches the cluster through its agent connection
			// and XenStore, never the agent's API or the hosts' network.
			Cloneflags: syscall.CLONE_NEWNET,
		},
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	group, err := m.newGroup(d, cfg, console && m.usesConsoleHelper(cfg))
	if err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("cgroup: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		pr.Close()
		pw.Close()
		if group != nil {
			group.Remove()
		}
		return ErrClosed
	}
	err = start(group, cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		if group != nil {
			group.Remove()
		}
		return fmt.Errorf("start %s: %w", path, err)
	}
	outEOF := make(chan struct{})
	go func() {
		io.Copy(out, pr)
		pr.Close()
		close(outEOF)
	}()
	r := &running{dom: d, cfg: cfg, spec: spec, pid: cmd.Process.Pid, exited: make(chan struct{}), out: tail, outEOF: outEOF, group: group}
	m.running[d.ID] = r
	m.sessions[r.pid] = d.ID
	m.wg.Add(1)
	waited := make(chan struct{})
	if group != nil {
		go m.watchOOM(r, waited)
	}
	go func() {
		cmd.Wait()
		close(waited)
		m.exited(r, exitStatus(cmd.ProcessState))
	}()
	return nil
}

// usesConsoleHelper reports whether cfg's program, if it has a console,
// runs on a terminal under the console helper: console = "pty" where the
// agent knows the helper. Whether it has a console was decided once, when
// its keys were written (a driver domain that appears in between must not
// start a helper that finds no keys).
func (m *Manager) usesConsoleHelper(cfg *Config) bool {
	return m.cfg.ConsoleHelper != "" && cfg.ConsoleMode() == ConsolePTY
}

// reachable reports whether any uid may execute path.
func reachable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o001 != 0 && worldSearchable(filepathDir(path))
}

// DomainUIDBase is the uid of domain 0's would-be process; domain d runs
// as DomainUIDBase+d when the agent is root. The range is far above the
// uids Debian hands out to people and services.
const DomainUIDBase = 200000

// DomainUID is the uid domain id runs under, if the agent can switch uids.
func DomainUID(id uint32) (uint32, bool) {
	if os.Geteuid() != 0 {
		return 0, false
	}
	return DomainUIDBase + id, true
}

// worldSearchable reports whether every directory on the way to dir lets
// anyone through, so that a domain under its own uid can start there.
func worldSearchable(dir string) bool {
	for d := dir; ; d = filepathDir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

func filepathDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func exitStatus(ps *os.ProcessState) ExitStatus {
	if ps == nil {
		return ExitStatus{Code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: unix.SignalName(ws.Signal())}
	}
	return ExitStatus{Code: ps.ExitCode()}
}

// killSession SIGKILLs every process of session sid: its process group
// first, then any process that moved to another group of the session.
func killSession(sid int) {
	unix.Kill(-sid, unix.SIGKILL)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == sid {
			continue
		}
		if st, err := readStat(pid); err == nil && st.session == sid {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	unix.Kill(sid, unix.SIGKILL)
}

type procStat struct{ ppid, session int }

// readStat reads a process's parent and session from /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may contain anything.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procStat{}, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// state ppid pgrp session ...
	if len(f) < 4 {
		return procStat{}, errors.New("bad stat")
	}
	ppid, err1 := strconv.Atoi(f[1])
	sid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return procStat{}, errors.New("bad stat")
	}
	return procStat{ppid: ppid, session: sid}, nil
}

// memAvailable is MemAvailable of /proc/meminfo in bytes.
func memAvailable() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func lookPath(p string) (string, error) { return exec.LookPath(p) }
