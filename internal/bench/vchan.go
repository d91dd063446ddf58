package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/vchan"
	"shi/internal/abi"
)

// VchanConfig sets "shi bench vchan".
type VchanConfig struct {
	DomainsConfig
	Bytes  int64 // streamed per run (1 GiB)
	Chunk  int   // write size, on both paths (64 KiB)
	Order  int   // both rings' order (20: 1 MiB, the largest)
	Rounds int   // small-message round trips per run (10000)
	Runs   int   // runs; the median is reported (5)
	// SpinMicros, if set, overrides how long a vchan polls before it
	// sleeps (vchan.SpinFor); -1 disables polling.
	SpinMicros int
}

// vchanMsg is the round trip's message size, that of the TCP baseline's
// ping-pong ("shi benchtcp ping").
const vchanMsg = 16

func (c *VchanConfig) defaults() {
	if c.Bytes <= 0 {
		c.Bytes = 1 << 30
	}
	if c.Chunk <= 0 {
		c.Chunk = 64 << 10
	}
	if c.Order == 0 {
		c.Order = abi.VCHAN_MAX_ORDER
	}
	if c.Rounds <= 0 {
		c.Rounds = 10000
	}
	if c.Runs <= 0 {
		c.Runs = 5
	}
}

// RunVchan streams cfg.Bytes from one domain to another through a vchan
// (guest/vchan, both rings of 2^Order bytes) and then bounces 16-byte
// messages between them, against a Unix socket stream in the same writes
// and a Unix socket ping-pong between two processes, run by run
// alternately; the last line is the throughput ratio. With the domains
// on two hosts (cfg.Remote) the stream flows from Hosts[1] to Hosts[0]
// and shi is measured alone: its last lines are figures for
// scripts/bench-remote.sh, throughput last.
func RunVchan(ctx context.Context, cfg VchanConfig, w io.Writer) error {
	cfg.defaults()
	if err := vchan.CheckOrders(uint16(cfg.Order), uint16(cfg.Order)); err != nil {
		return err
	}
	p, err := newPair(cfg.DomainsConfig)
	if err != nil {
		return err
	}
	defer p.close()
	params := []string{"bytes=" + strconv.FormatInt(cfg.Bytes, 10), "chunk=" + strconv.Itoa(cfg.Chunk),
		"order=" + strconv.Itoa(cfg.Order), "rounds=" + strconv.Itoa(cfg.Rounds), "runs=" + strconv.Itoa(cfg.Runs)}
	if cfg.SpinMicros != 0 {
		params = append(params, "spin="+strconv.Itoa(max(cfg.SpinMicros, 0)))
	}
	if err := p.start(ctx, "vchan", "vchan-server", "vchan-client", params...); err != nil {
		return err
	}
	var sock, shi []float64
	var sockRTT, shiRTT []time.Duration
	for i := range cfg.Runs {
		if !cfg.Remote() {
			r, err := UnixStreamThroughput(cfg.Bytes, cfg.Chunk)
			if err != nil {
				return fmt.Errorf("unix socket: %w", err)
			}
			sock = append(sock, r.BytesPerSecond())
		}
		d, err := p.run(ctx, 0, i)
		if err != nil {
			return err
		}
		shi = append(shi, float64(cfg.Bytes)/d.Seconds())
		v, err := p.result(ctx, 1, "rtt/"+strconv.Itoa(i), 5*time.Minute)
		if err != nil {
			return err
		}
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("bad round trip result %q", v)
		}
		shiRTT = append(shiRTT, time.Duration(ns))
		if !cfg.Remote() {
			r, err := UnixPingPong(cfg.Rounds, vchanMsg)
			if err != nil {
				return fmt.Errorf("unix socket: %w", err)
			}
			sockRTT = append(sockRTT, r.PerOp())
		}
	}
	ringKiB := (1 << cfg.Order) >> 10
	if cfg.Remote() {
		fmt.Fprintf(w, "%s through a vchan (%d KiB rings, %d KiB writes) from %s to %s, then %d-byte round trips (median of %d runs; shi alone: no local baseline crosses hosts)\n",
			bytesIEC(cfg.Bytes), ringKiB, cfg.Chunk>>10, cfg.Hosts[1], cfg.Hosts[0], vchanMsg, cfg.Runs)
		f, rt := GBFigure(FigRemoteVchan, shi), MicrosFigure(FigRemoteVchanRTT, shiRTT)
		t := &Table{W: w}
		t.Row("path", "figure", "runs")
		t.Row("shi vchan stream", f.String(), gb(shi))
		t.Row("shi vchan round trip", rt.String(), fmtDurations(shiRTT))
		t.Flush()
		fmt.Fprintln(w, rt.Line())
		fmt.Fprintln(w, f.Line())
		return nil
	}
	sockM, shiM := medianF(sock), medianF(shi)
	fmt.Fprintf(w, "%s between %s through a vchan (%d KiB rings) vs a Unix socket between two processes, %d KiB writes; %d-byte round trips (median of %d runs)\n",
		bytesIEC(cfg.Bytes), cfg.where(), ringKiB, cfg.Chunk>>10, vchanMsg, cfg.Runs)
	t := &Table{W: w}
	t.Row("path", "figure", "runs")
	t.Row("unix socket stream", fmt.Sprintf("%.2f GB/s", sockM/1e9), gb(sock))
	t.Row("shi vchan stream", fmt.Sprintf("%.2f GB/s", shiM/1e9), gb(shi))
	t.Row("unix socket round trip", median(sockRTT).Round(10*time.Nanosecond).String(), fmtDurations(sockRTT))
	t.Row("shi vchan round trip", median(shiRTT).Round(10*time.Nanosecond).String(), fmtDurations(shiRTT))
	t.Flush()
	fmt.Fprintf(w, "vchan round trip / unix socket round trip = %.2fx\n", float64(median(shiRTT))/float64(median(sockRTT)))
	fmt.Fprintf(w, "vchan throughput / unix socket throughput = %.2fx (goal: at least 1.5x)\n", shiM/sockM)
	return nil
}

// UnixPingPong measures the round trip of size-byte messages over a
// SOCK_STREAM Unix socket pair with a child that echoes them, raw
// blocking system calls on both sides.
func UnixPingPong(rounds, size int) (BenchResult, error) {
	res := BenchResult{Name: "unix socket ping-pong", Ops: rounds}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return res, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "bench"), os.NewFile(uintptr(fds[1]), "bench-child")
	cmd, err := startChild("unix-echo", []string{"SHI_BENCH_CHUNK=" + strconv.Itoa(size)}, theirs)
	theirs.Close()
	if err != nil {
		mine.Close()
		return res, err
	}
	defer func() {
		mine.Close() // EOF for the child
		cmd.Wait()
	}()
	buf := make([]byte, size)
	roundTrip := func() error {
		if err := writeFull(fds[0], buf); err != nil {
			return err
		}
		return readFull(fds[0], buf)
	}
	if err := roundTrip(); err != nil { // warm-up; the child is up after this
		return res, fmt.Errorf("bench: bench child: %w", err)
	}
	start := time.Now()
	for range rounds {
		if err := roundTrip(); err != nil {
			return res, err
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// echoChild echoes messages of sizeArg bytes on fd 3 until EOF.
func echoChild(sizeArg string) error {
	size, err := strconv.Atoi(sizeArg)
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	for {
		if err := readFull(3, buf); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := writeFull(3, buf); err != nil {
			return err
		}
	}
}

func readFull(fd int, b []byte) error {
	for got := 0; got < len(b); {
		n, err := unix.Read(fd, b[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.EOF
		}
		got += n
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// The domains' side.

func vchanSpin(p map[string]int64) {
	if us, ok := p["spin"]; ok {
		vchan.SpinFor = time.Duration(us) * time.Microsecond
	}
}

// vchanServer serves the vchan and reads: each run's stream (timed,
// published as result/RUN), then echoes the client's round trips.
func (d *benchDomain) vchanServer(p map[string]int64) error {
	vchanSpin(p)
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	cfg := vchan.Config{XenStore: d.xs, LeftOrder: uint16(p["order"]), RightOrder: uint16(p["order"])}
	conn, err := cfg.Listen(peer, d.home(d.me)+"vchan")
	if err != nil {
		return err
	}
	chunk := p["chunk"]
	buf := make([]byte, chunk)
	var off int64
	for run := range p["runs"] {
		if err := d.waitGo(run); err != nil {
			return err
		}
		t0 := time.Now()
		if err := readStream(conn, buf, off, p["bytes"], chunk); err != nil {
			return err
		}
		off += p["bytes"]
		if err := d.publish("result/"+strconv.FormatInt(run, 10), strconv.FormatInt(int64(time.Since(t0)), 10), 0); err != nil {
			return err
		}
		msg := buf[:vchanMsg]
		for range 1 + p["rounds"] {
			if _, err := io.ReadFull(conn, msg); err != nil {
				return fmt.Errorf("benchdomain: echo: %w", err)
			}
			if _, err := conn.Write(msg); err != nil {
				return fmt.Errorf("benchdomain: echo: %w", err)
			}
		}
	}
	if _, err := conn.Read(buf[:1]); err != io.EOF {
		return fmt.Errorf("benchdomain: stream longer than expected: %v", err)
	}
	return conn.Close()
}

// vchanClient connects and writes each run's stream, then times the
// round trips (published as rtt/RUN, per round trip).
func (d *benchDomain) vchanClient(p map[string]int64) error {
	vchanSpin(p)
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cfg := vchan.Config{XenStore: d.xs}
	conn, err := cfg.DialContext(ctx, peer, d.home(peer)+"vchan")
	if err != nil {
		return err
	}
	chunk := p["chunk"]
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	var off int64
	for run := range p["runs"] {
		if err := d.waitGo(run); err != nil {
			return err
		}
		if err := writeStream(conn, buf, off, p["bytes"], chunk); err != nil {
			return err
		}
		off += p["bytes"]
		msg, back := make([]byte, vchanMsg), make([]byte, vchanMsg)
		roundTrip := func() error {
			if _, err := conn.Write(msg); err != nil {
				return err
			}
			_, err := io.ReadFull(conn, back)
			return err
		}
		if err := roundTrip(); err != nil { // warm-up: the stream has drained
			return err
		}
		t0 := time.Now()
		for range p["rounds"] {
			if err := roundTrip(); err != nil {
				return fmt.Errorf("benchdomain: round trip: %w", err)
			}
		}
		perOp := int64(time.Since(t0)) / p["rounds"]
		if err := d.publish("rtt/"+strconv.FormatInt(run, 10), strconv.FormatInt(perOp, 10), 0); err != nil {
			return err
		}
	}
	return conn.Close()
}
