package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/hv"
	"shi/guest/xs"
)

// RunHelper is the first process of a domain whose console is a
// terminal: it opens the domain's console (OpenFront), creates a
// pseudo-terminal, starts argv (argv[0] the program's path, argv[1:] its
// argument list from argv[0] on) on the terminal's slave side in a
// session of its own with it as the controlling terminal, and joins the
// master side to the console ring. Output also goes to out (the agent's
// log and the domain's output tail, on the domain's host). It returns the
// program's exit code once its output has reached the back end (or a
// few seconds have passed).
//
// The program does not inherit the domain's agent connection: this
// helper holds it. A program that uses the guest library itself runs
// with console = "direct".
func RunHelper(argv []string, out io.Writer) (int, error) {
	if len(argv) < 2 {
		return 2, errors.New("console helper: want PATH ARGV0 [ARG...]")
	}
	hvc, err := hv.Self()
	if err != nil {
		return 1, err
	}
	xsc, err := xs.OpenEnv()
	if err != nil {
		return 1, err
	}
	f, err := OpenFront(hvc, xsc)
	if err != nil {
		return 1, err
	}
	master, slave, err := openPTY()
	if err != nil {
		return 1, err
	}
	sizeKey := ""
	if be, err := xsc.Read(FrontPath(uint32(hvc.DomID())) + "/backend"); err == nil {
		sizeKey = string(be) + "/" + KeySize
		if v, err := xsc.Read(sizeKey); err == nil {
			if c, r, err := ParseSize(v); err == nil {
				setSize(master, c, r)
			}
		}
	}
	cmd := &exec.Cmd{Path: argv[0], Args: argv[1:], Env: childEnv(os.Environ()),
		Stdin: slave, Stdout: slave, Stderr: slave,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}}
	// A program the domain's uid cannot reach by path is executed
	// through a descriptor the agent opened (/proc/self/fd/N): the
	// program needs that descriptor at the same number.
	if n, ok := strings.CutPrefix(argv[0], "/proc/self/fd/"); ok {
		if fd, err := strconv.Atoi(n); err == nil && fd >= 3 && fd < 64 {
			cmd.ExtraFiles = make([]*os.File, fd-2)
			cmd.ExtraFiles[fd-3] = os.NewFile(uintptr(fd), "cmd")
		}
	}
	if err := cmd.Start(); err != nil {
		return 127, fmt.Errorf("console helper: start %s: %w", argv[1], err)
	}
	slave.Close()

	// Window size: the back end writes the writer's.
	if sizeKey != "" {
		if w, err := xsc.Watch(sizeKey, "console-size"); err == nil {
			go func() {
				for range w.Events() {
					if v, err := xsc.Read(sizeKey); err == nil {
						if c, r, err := ParseSize(v); err == nil {
							setSize(master, c, r)
						}
					}
				}
			}()
		}
	}

	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	lc := newLogCopy(out, LogRate, time.Now)
	err = bridge(f.r, master, lc, exited)
	lc.Close()
	<-exited
	for deadline := time.Now().Add(3 * time.Second); !f.Flushed() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return exitCode(cmd.ProcessState), err
}

// bridge joins the terminal's master side to the rings on one thread,
// polling the master and the event channel together: a keystroke's echo
// costs one wake-up on each side, with no hand-off between goroutines.
// Output also goes to out. It returns once the master side has ended
// (every holder of the slave side has gone) and its output is in the
// ring, or 2 s after the program exited (a background job may hold the
// terminal).
func bridge(r *rings, master *os.File, out io.Writer, exited <-chan struct{}) error {
	mfd := int(master.Fd())
	if err := unix.SetNonblock(mfd, true); err != nil {
		return err
	}
	var obuf [chunk]byte
	var ibuf [1024]byte
	var opend, ipend []byte // read, not yet written on
	eof := false
	var giveUp time.Time
	freed := 0 // in[] read since the back end was last notified
	for {
		moved, notify := false, false
		if len(opend) == 0 && !eof {
			n, err := unix.Read(mfd, obuf[:])
			switch {
			case n > 0:
				opend = obuf[:n]
				out.Write(bytes.ReplaceAll(opend, []byte("\r"), nil))
			case err == unix.EAGAIN || err == unix.EINTR:
			default: // EIO: no slave side left
				eof = true
			}
		}
		if len(opend) > 0 {
			n, err := r.write(r.out, opend)
			if err != nil {
				return err
			}
			if n > 0 {
				opend, moved, notify = opend[n:], true, true
			}
		}
		if len(ipend) == 0 {
			n, err := r.read(r.in, ibuf[:])
			if err != nil {
				return err
			}
			if n > 0 {
				ipend, moved = ibuf[:n], true
				notify = consumed(r.in, &freed, n) || notify
			}
		}
		if len(ipend) > 0 {
			if n, err := unix.Write(mfd, ipend); n > 0 {
				ipend = ipend[n:]
			} else if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				ipend = nil // the terminal is gone: keystrokes go nowhere
			}
		}
		if moved {
			if notify {
				freed = 0
			}
			if err := r.publish(notify); err != nil {
				return err
			}
			continue
		}
		if eof && len(opend) == 0 {
			return nil
		}
		if len(opend) > 0 && r.evt.PeerGone(r.port) {
			// The back end (or its host) is gone: the program goes
			// on, its output only to the log, rather than blocking on
			// a ring nobody reads.
			opend = nil
			continue
		}
		wait := 1000
		select {
		case <-exited:
			if giveUp.IsZero() {
				giveUp = time.Now().Add(2 * time.Second)
			}
			if time.Now().After(giveUp) {
				return nil
			}
			wait = 50
		default:
		}
		fds := []unix.PollFd{{Fd: int32(r.evt.Fd()), Events: unix.POLLIN}}
		var ev int16
		if len(opend) == 0 && !eof {
			ev |= unix.POLLIN
		}
		if len(ipend) > 0 {
			ev |= unix.POLLOUT
		}
		if ev != 0 {
			fds = append(fds, unix.PollFd{Fd: int32(mfd), Events: ev})
		}
		if _, err := unix.Poll(fds, wait); err != nil && err != unix.EINTR {
			return err
		}
		// Re-arm whatever fired; the rings are checked again anyway.
		for {
			p, err := r.evt.Pending()
			if err != nil {
				break
			}
			r.evt.Unmask(p)
		}
	}
}

// childEnv is the helper's environment without the agent connection
// (which the program does not get), with a TERM, and saying so.
func childEnv(env []string) []string {
	var out []string
	term := false
	for _, e := range env {
		if strings.HasPrefix(e, hv.EnvFD+"=") {
			continue
		}
		term = term || strings.HasPrefix(e, "TERM=")
		out = append(out, e)
	}
	if !term {
		out = append(out, "TERM=xterm-256color")
	}
	// So that the guest library, should the program use it, says why
	// it has no agent connection.
	return append(out, hv.EnvConsolePTY+"=1")
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// openPTY opens a pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("console helper: open /dev/ptmx: %w", err)
	}
	master = os.NewFile(uintptr(m), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("console helper: unlockpt: %w", err)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("console helper: ptsname: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	s, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("console helper: open %s: %w", name, err)
	}
	return master, os.NewFile(uintptr(s), name), nil
}

// setSize sets the terminal's window size; the kernel sends SIGWINCH to
// its foreground process group.
func setSize(master *os.File, cols, rows int) {
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
}
