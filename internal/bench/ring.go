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
// is the throughput ratio.
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
	v, err := p.result(ctx, 0, "map", 5*time.Minute)
	if err != nil {
		return err
	}
	mapNs, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("bad map result %q", v)
	}
	gb := func(xs []float64) string {
		s := ""
		for i, x := range xs {
			if i > 0 {
				s += " "
			}
			s += fmt.Sprintf("%.2f", x/1e9)
		}
		return s
	}
	sockM, ringM := medianF(sock), medianF(ring)
	perMap := time.Duration(mapNs) / time.Duration(cfg.MapRounds)
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

func bytesIEC(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d bytes", b)
}
