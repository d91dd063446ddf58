package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"
)

// RingConfig sets "shi bench ring".
type RingConfig struct {
	DomainsConfig
	Bytes     int64 // streamed per run (1 GiB)
	Chunk     int   // writer's write size (64 KiB)
	RingPages int   // data pages of the ring (1024: 4 MiB)
	Runs      int   // runs; the median is reported (5)
	MapRounds int   // grant map+unmap cycles timed (2000)
	// SpinMicros, if set, overrides how long the pipe polls before it
	// sleeps (guest/ring.SpinFor); -1 disables polling.
	SpinMicros int
}

func (c *RingConfig) defaults() {
	if c.Bytes <= 0 {
		c.Bytes = 1 << 30
	}
	if c.Chunk <= 0 {
		c.Chunk = 64 << 10
	}
	if c.RingPages <= 0 {
		c.RingPages = 1024
	}
	if c.Runs <= 0 {
		c.Runs = 5
	}
	if c.MapRounds <= 0 {
		c.MapRounds = 2000
	}
}

// RunRing streams cfg.Bytes from one local domain to another through a
// granted ring (guest/ring's pipe) and over a Unix socket between two
// processes, measures grant map+unmap, and prints a table whose last line
// is the throughput ratio. With the domains on two hosts (cfg.Remote) the
// producer is the second domain, so the stream flows from Hosts[1] to
// Hosts[0], and the consumer maps a grant of the other host; shi is
// measured alone and the last line is the throughput figure (see Figure).
func RunRing(ctx context.Context, cfg RingConfig, w io.Writer) error {
	cfg.defaults()
	p, err := newPair(cfg.DomainsConfig)
	if err != nil {
		return err
	}
	defer p.close()
	params := []string{"bytes=" + strconv.FormatInt(cfg.Bytes, 10), "chunk=" + strconv.Itoa(cfg.Chunk),
		"pages=" + strconv.Itoa(cfg.RingPages), "runs=" + strconv.Itoa(cfg.Runs), "maps=" + strconv.Itoa(cfg.MapRounds)}
	if cfg.SpinMicros != 0 {
		params = append(params, "spin="+strconv.Itoa(max(cfg.SpinMicros, 0)))
	}
	if err := p.start(ctx, "ring", "ring-consumer", "ring-producer", params...); err != nil {
		return err
	}
	if cfg.Remote() {
		return remoteRing(ctx, cfg, p, w)
	}
	// Runs alternate between the two paths (see RunEvtchn).
	var sock, ring []float64
	for i := range cfg.Runs {
		r, err := UnixStreamThroughput(cfg.Bytes, cfg.Chunk)
		if err != nil {
			return fmt.Errorf("unix socket: %w", err)
		}
		sock = append(sock, r.BytesPerSecond())
		d, err := p.run(ctx, 0, i)
		if err != nil {
			return err
		}
		ring = append(ring, float64(cfg.Bytes)/d.Seconds())
	}
	perMap, _, err := mapTimes(ctx, cfg, p)
	if err != nil {
		return err
	}
	sockM, ringM := medianF(sock), medianF(ring)
	fmt.Fprintf(w, "%s stream between two local domains through a granted ring (%d KiB) vs a Unix socket between two processes (median of %d runs)\n",
		bytesIEC(cfg.Bytes), cfg.RingPages*4, cfg.Runs)
	t := &Table{W: w}
	t.Row("path", "throughput", "runs (GB/s)")
	t.Row("unix socket stream", fmt.Sprintf("%.2f GB/s", sockM/1e9), gb(sock))
	t.Row("shi granted ring", fmt.Sprintf("%.2f GB/s", ringM/1e9), gb(ring))
	t.Row("grant map+unmap", fmt.Sprintf("%.0f /s", float64(time.Second)/float64(perMap)), perMap.Round(100*time.Nanosecond).String()+" each")
	t.Flush()
	fmt.Fprintf(w, "ring throughput / unix socket throughput = %.2fx (goal: at least 1.5x)\n", ringM/sockM)
	return nil
}

// remoteRing runs the streams of a pair on two hosts back to back (there
// is no baseline to alternate with) and prints shi's figures.
func remoteRing(ctx context.Context, cfg RingConfig, p *benchPair, w io.Writer) error {
	var ring []float64
	for i := range cfg.Runs {
		d, err := p.run(ctx, 0, i)
		if err != nil {
			return err
		}
		ring = append(ring, float64(cfg.Bytes)/d.Seconds())
	}
	perMap, mapOnly, err := mapTimes(ctx, cfg, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s stream through a granted ring (%d KiB, %d KiB writes) between %s, from %s to %s (median of %d runs; shi alone: no local baseline crosses hosts)\n",
		bytesIEC(cfg.Bytes), cfg.RingPages*4, cfg.Chunk>>10, cfg.where(), cfg.Hosts[1], cfg.Hosts[0], cfg.Runs)
	f := GBFigure(FigRemoteRing, ring)
	t := &Table{W: w}
	t.Row("path", "figure", "runs")
	t.Row("shi granted ring", f.String(), gb(ring))
	t.Row("grant map+unmap of the other host's grant", perMap.Round(100*time.Nanosecond).String(),
		fmt.Sprintf("%d cycles: map %v, unmap %v each", cfg.MapRounds, mapOnly.Round(100*time.Nanosecond), (perMap-mapOnly).Round(100*time.Nanosecond)))
	t.Flush()
	fmt.Fprintln(w, MicrosFigure(FigRemoteMap, []time.Duration{mapOnly}).Line())
	fmt.Fprintln(w, MicrosFigure(FigRemoteUnmap, []time.Duration{perMap - mapOnly}).Line())
	fmt.Fprintln(w, f.Line())
	return nil
}

// mapTimes waits for the consumer's grant map figures and returns the
// mean time of a map+unmap cycle and of its map.
func mapTimes(ctx context.Context, cfg RingConfig, p *benchPair) (cycle, mapOnly time.Duration, err error) {
	var ns [2]int64
	for i, key := range []string{"map", "maponly"} {
		v, err := p.result(ctx, 0, key, 5*time.Minute)
		if err != nil {
			return 0, 0, err
		}
		if ns[i], err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("bad %s result %q", key, v)
		}
	}
	n := time.Duration(cfg.MapRounds)
	return time.Duration(ns[0]) / n, time.Duration(ns[1]) / n, nil
}

// gb formats throughputs (bytes per second) in GB/s.
func gb(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.2f", x/1e9)
	}
	return s
}

func bytesIEC(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d bytes", b)
}
