package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"
)

// EvtchnConfig sets "shi bench evtchn".
type EvtchnConfig struct {
	DomainsConfig
	Rounds int // round trips per run (10000)
	Runs   int // runs; the median is reported (11)
}

// RunEvtchn measures the event-channel round trip between two local
// domains (each send one write to the peer's eventfd doorbell, each
// receive epoll, drain and unmask) against a raw eventfd ping-pong
// between two processes, and prints a table whose last line is the ratio.
// With the domains on two hosts (cfg.Remote) it measures shi alone, each
// send one frame on the domains' link, and the last line is the figure
// (see Figure); scripts/bench-remote.sh sets it against TCP.
func RunEvtchn(ctx context.Context, cfg EvtchnConfig, w io.Writer) error {
	if cfg.Rounds <= 0 {
		cfg.Rounds = 10000
	}
	if cfg.Runs <= 0 {
		cfg.Runs = 11 // this machine is shared: many short runs beat a few long ones
	}
	p, err := newPair(cfg.DomainsConfig)
	if err != nil {
		return err
	}
	defer p.close()
	params := []string{"rounds=" + strconv.Itoa(cfg.Rounds), "runs=" + strconv.Itoa(cfg.Runs)}
	if err := p.start(ctx, "evtchn", "evtchn-pong", "evtchn-ping", params...); err != nil {
		return err
	}
	if cfg.Remote() {
		return remoteEvtchn(ctx, cfg, p, w)
	}
	// Runs alternate between the two paths, so that both see the same
	// load on a shared machine.
	var raw, dom []time.Duration
	for i := range cfg.Runs {
		r, err := EventFDPingPong(cfg.Rounds)
		if err != nil {
			return fmt.Errorf("eventfd ping-pong: %w", err)
		}
		raw = append(raw, r.PerOp())
		d, err := p.run(ctx, 1, i)
		if err != nil {
			return err
		}
		dom = append(dom, d)
	}
	rawM, domM := median(raw), median(dom)
	fmt.Fprintf(w, "event-channel round trip between two local domains vs a raw eventfd ping-pong (median of %d runs of %d)\n", cfg.Runs, cfg.Rounds)
	t := &Table{W: w}
	t.Row("path", "round trip", "runs")
	t.Row("eventfd ping-pong (2 processes)", rawM.Round(10*time.Nanosecond).String(), fmtDurations(raw))
	t.Row("shi event channel (2 domains)", domM.Round(10*time.Nanosecond).String(), fmtDurations(dom))
	t.Flush()
	fmt.Fprintf(w, "evtchn round trip / eventfd round trip = %.2fx (goal: at most 1.2x)\n", float64(domM)/float64(rawM))
	return nil
}

func fmtDurations(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		s += d.Round(10 * time.Nanosecond).String()
	}
	return s
}

// remoteEvtchn runs the round trips of a pair on two hosts, back to back:
// there is no baseline to alternate with.
func remoteEvtchn(ctx context.Context, cfg EvtchnConfig, p *benchPair, w io.Writer) error {
	var dom []time.Duration
	for i := range cfg.Runs {
		d, err := p.run(ctx, 1, i)
		if err != nil {
			return err
		}
		dom = append(dom, d)
	}
	fmt.Fprintf(w, "event-channel round trip between %s (median of %d runs of %d; shi alone: no local baseline crosses hosts)\n",
		cfg.where(), cfg.Runs, cfg.Rounds)
	f := MicrosFigure(FigRemoteEvtchn, dom)
	t := &Table{W: w}
	t.Row("path", "round trip", "runs")
	t.Row(fmt.Sprintf("shi event channel (%s <-> %s)", cfg.Hosts[1], cfg.Hosts[0]), f.String(), fmtDurations(dom))
	t.Flush()
	fmt.Fprintln(w, f.Line())
	return nil
}
