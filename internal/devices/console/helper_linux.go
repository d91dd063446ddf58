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

	// Output: the terminal to the ring and to out. Ends with EIO once
	// every holder of the slave side has gone.
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		buf := make([]byte, chunk)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				if _, err := f.Write(buf[:n]); err != nil {
					return
				}
				out.Write(bytes.ReplaceAll(buf[:n], []byte("\r"), nil))
			}
			if err != nil {
				return
			}
		}
	}()
	// Input: the ring to the terminal.
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			if _, err := master.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
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

	err = cmd.Wait()
	code := exitCode(cmd.ProcessState)
	select { // the last output; a background job may hold the terminal
	case <-outDone:
	case <-time.After(2 * time.Second):
	}
	for deadline := time.Now().Add(3 * time.Second); !f.Flushed() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return code, nil
}

// childEnv is the helper's environment without the agent connection
// (which the program does not get) and with a TERM.
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
	return out
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
