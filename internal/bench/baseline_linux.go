package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"shi/internal/shm"
)

// BenchResult is what a benchmark helper measured.
type BenchResult struct {
	Name     string
	Ops      int           // round trips or writes
	Bytes    int64         // payload moved (0 for latency benchmarks)
	Duration time.Duration // wall time of the measured part
}

// PerOp is the mean time of one operation.
func (r BenchResult) PerOp() time.Duration {
	if r.Ops == 0 {
		return 0
	}
	return r.Duration / time.Duration(r.Ops)
}

// BytesPerSecond is the payload throughput.
func (r BenchResult) BytesPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Duration.Seconds()
}

func (r BenchResult) String() string {
	if r.Bytes > 0 {
		return fmt.Sprintf("%s: %d bytes in %v, %.2f GB/s", r.Name, r.Bytes, r.Duration, r.BytesPerSecond()/1e9)
	}
	return fmt.Sprintf("%s: %d ops in %v, %v/op", r.Name, r.Ops, r.Duration, r.PerOp())
}

// childEnv selects the role of a re-executed benchmark child.
const childEnv = "SHI_BENCH_CHILD"

// RunChild runs the child side of a benchmark and exits, if this process
// was started as one; otherwise it returns at once. Call it first thing in
// main (and in TestMain) of any program that runs the benchmarks.
func RunChild() {
	role := os.Getenv(childEnv)
	if role == "" {
		return
	}
	var err error
	switch role {
	case "eventfd-pong":
		err = pongChild(os.Getenv("SHI_BENCH_ROUNDS"))
	case "unix-sink":
		err = sinkChild(os.Getenv("SHI_BENCH_CHUNK"))
	case "tcp-serve":
		err = tcpServeChild()
	case "unix-echo":
		err = echoChild(os.Getenv("SHI_BENCH_CHUNK"))
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startChild re-executes this binary in role with files as fds 3, 4, ...
func startChild(role string, env []string, files ...*os.File) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start bench child: %w", err)
	}
	return cmd, nil
}

// EventFDPingPong measures the round trip of a raw eventfd ping-pong
// between this process and a child: write(ping), the child's blocking
// read and write(pong), our blocking read. This is the floor an
// event-channel round trip between two local domains is compared with.
func EventFDPingPong(rounds int) (BenchResult, error) {
	res := BenchResult{Name: "eventfd ping-pong", Ops: rounds}
	ping, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return res, err
	}
	pong, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ping)
		return res, err
	}
	pingF, pongF := os.NewFile(uintptr(ping), "ping"), os.NewFile(uintptr(pong), "pong")
	defer pingF.Close()
	defer pongF.Close()
	cmd, err := startChild("eventfd-pong", []string{"SHI_BENCH_ROUNDS=" + strconv.Itoa(rounds+1)}, pingF, pongF)
	if err != nil {
		return res, err
	}
	// If the child dies early, wake our blocking read so we don't hang. The
	// descriptors are closed only after this goroutine is done with pong.
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		shm.Signal(pong)
		exited <- err
	}()
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			<-exited
		}
	}()
	var buf [8]byte
	// Raw syscalls on both sides, as the event-channel path uses: the
	// baseline must not pay for Go's scheduler hand-off when shi does not.
	roundTrip := func() error {
		if err := shm.SignalHot(ping); err != nil {
			return err
		}
		return shm.ReadHot(pong, buf[:])
	}
	if err := roundTrip(); err != nil { // warm-up; the child is up after this
		return res, err
	}
	start := time.Now()
	for range rounds {
		if err := roundTrip(); err != nil {
			return res, err
		}
	}
	res.Duration = time.Since(start)
	waited = true
	if err := <-exited; err != nil {
		return res, fmt.Errorf("bench: bench child: %w", err)
	}
	return res, nil
}

func pongChild(roundsArg string) error {
	rounds, err := strconv.Atoi(roundsArg)
	if err != nil {
		return err
	}
	var buf [8]byte
	for range rounds {
		if err := shm.ReadHot(3, buf[:]); err != nil {
			return err
		}
		if err := shm.SignalHot(4); err != nil {
			return err
		}
	}
	return nil
}

// UnixStreamThroughput measures streaming total bytes over a SOCK_STREAM
// Unix socket pair to a child, in writes of chunk bytes, from the first
// write until the child confirms it has read everything.
func UnixStreamThroughput(total int64, chunk int) (BenchResult, error) {
	res := BenchResult{Name: "unix socket stream"}
	if chunk <= 0 || total <= 0 {
		return res, errors.New("bench: bad stream benchmark size")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return res, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "bench"), os.NewFile(uintptr(fds[1]), "bench-child")
	cmd, err := startChild("unix-sink", []string{"SHI_BENCH_CHUNK=" + strconv.Itoa(chunk)}, theirs)
	theirs.Close()
	if err != nil {
		mine.Close()
		return res, err
	}
	defer func() {
		mine.Close() // EOF for a child still reading
		cmd.Wait()
	}()
	// A one-byte hello proves the child is running before the clock starts.
	var hello [1]byte
	if _, err := io.ReadFull(mine, hello[:]); err != nil {
		return res, fmt.Errorf("bench: bench child: %w", err)
	}
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	for left := total; left > 0; {
		n := int(min(left, int64(chunk)))
		w, err := unix.Write(fds[0], buf[:n])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return res, err
		}
		left -= int64(w)
		res.Ops++
	}
	if err := unix.Shutdown(fds[0], unix.SHUT_WR); err != nil {
		return res, err
	}
	var got [8]byte
	if _, err := io.ReadFull(mine, got[:]); err != nil {
		return res, fmt.Errorf("bench: bench child: %w", err)
	}
	res.Duration = time.Since(start)
	res.Bytes = int64(binary.LittleEndian.Uint64(got[:]))
	if res.Bytes != total {
		return res, fmt.Errorf("bench: child read %d of %d bytes", res.Bytes, total)
	}
	return res, nil
}

func sinkChild(chunkArg string) error {
	chunk, err := strconv.Atoi(chunkArg)
	if err != nil {
		return err
	}
	if _, err := unix.Write(3, []byte{1}); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	var total uint64
	for {
		n, err := unix.Read(3, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		total += uint64(n)
	}
	_, err = unix.Write(3, binary.LittleEndian.AppendUint64(nil, total))
	return err
}
