package bench

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Figures are how the benchmarks across hosts report to
// scripts/bench-remote.sh. shi's side ("shi bench evtchn|ring -hosts A,B")
// and the TCP baselines ("shi benchtcp ping|stream") each end with lines
//
//	NAME = MEDIAN UNIT (runs: R1 R2 ...)
//
// and the script, which alternates invocations of the two, hands
// everything they printed to Summarize for the medians and ratios.

// Names of the figures.
const (
	FigRemoteEvtchn = "remote evtchn round trip"
	FigRemoteRing   = "remote ring throughput"
	FigRemoteMap    = "remote grant map"
	FigRemoteUnmap  = "remote grant unmap"
	// FigRemoteVchan and FigRemoteVchanRTT are "shi bench vchan -hosts".
	FigRemoteVchan    = "remote vchan throughput"
	FigRemoteVchanRTT = "remote vchan round trip"
	FigTCPRoundTrip   = "tcp round trip"
	FigTCPStream      = "tcp throughput"
)

// Units of the figures.
const (
	unitMicros = "µs"
	unitGBs    = "GB/s"
)

// Figure is one measured quantity and its value in each run.
type Figure struct {
	Name string
	Unit string    // "µs" or "GB/s"
	Runs []float64 // in Unit
}

// MicrosFigure is a latency figure: one duration per run.
func MicrosFigure(name string, ds []time.Duration) Figure {
	f := Figure{Name: name, Unit: unitMicros}
	for _, d := range ds {
		f.Runs = append(f.Runs, float64(d)/float64(time.Microsecond))
	}
	return f
}

// GBFigure is a throughput figure: bytes per second in each run.
func GBFigure(name string, bytesPerSec []float64) Figure {
	f := Figure{Name: name, Unit: unitGBs}
	for _, b := range bytesPerSec {
		f.Runs = append(f.Runs, b/1e9)
	}
	return f
}

// Median is the median of the runs (the upper one of an even count, as
// elsewhere in this package).
func (f Figure) Median() float64 { return medianF(f.Runs) }

// higherBetter reports whether a larger value is better (throughput).
func (f Figure) higherBetter() bool { return f.Unit == unitGBs }

func (f Figure) format(v float64) string {
	if f.Unit == unitGBs {
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// String is the median with its unit.
func (f Figure) String() string { return f.format(f.Median()) + " " + f.Unit }

// Line is the figure as its program prints it last.
func (f Figure) Line() string {
	runs := make([]string, len(f.Runs))
	for i, v := range f.Runs {
		runs[i] = f.format(v)
	}
	return fmt.Sprintf("%s = %s %s (runs: %s)", f.Name, f.format(f.Median()), f.Unit, strings.Join(runs, " "))
}

var figureLine = regexp.MustCompile(`^([a-z][a-z0-9 +]*[a-z0-9]) = [0-9.]+ (µs|GB/s) \(runs: ([0-9. ]+)\)$`)

// ParseFigure parses a line printed by Line; ok is false for any other
// line.
func ParseFigure(line string) (f Figure, ok bool) {
	m := figureLine.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return f, false
	}
	f = Figure{Name: m[1], Unit: m[2]}
	for _, s := range strings.Fields(m[3]) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Figure{}, false
		}
		f.Runs = append(f.Runs, v)
	}
	return f, len(f.Runs) > 0
}

// Ratio is a headline of scripts/bench-remote.sh: shi's figure against
// the baseline's, measured in the same rounds.
type Ratio struct {
	Shi, Base string
	Goal      float64 // at most (latency) or at least (throughput)
}

// RemoteRatios are the headlines of scripts/bench-remote.sh, in the order
// they print.
var RemoteRatios = []Ratio{
	{Shi: FigRemoteEvtchn, Base: FigTCPRoundTrip, Goal: 1.3},
	{Shi: FigRemoteRing, Base: FigTCPStream, Goal: 0.8},
	{Shi: FigRemoteRing, Base: FigTLSStream}, // agents with -tls-*, TLS=1
	{Shi: FigRemoteVchanRTT, Base: FigTCPRoundTrip},
	{Shi: FigRemoteVchan, Base: FigTCPStream, Goal: 0.8},
}

// A log of scripts/bench-remote.sh is the output of the programs it ran,
// with marker lines: "== phase: NAME" starts a phase (agents and faults
// set one way: "no delay", "1 ms delay"), "== round: N" a round within
// it (one invocation of each program, one after the other).
const (
	phaseMarker = "== phase: "
	roundMarker = "== round: "
)

// phase is the figures of one phase, by name, and by round.
type phase struct {
	name   string
	order  []string           // figure names, first seen first
	all    map[string]*Figure // every run of every round
	rounds []map[string]*Figure
}

func (p *phase) add(f Figure) {
	if p.all[f.Name] == nil {
		p.order = append(p.order, f.Name)
		p.all[f.Name] = &Figure{Name: f.Name, Unit: f.Unit}
	}
	p.all[f.Name].Runs = append(p.all[f.Name].Runs, f.Runs...)
	if len(p.rounds) == 0 {
		p.rounds = append(p.rounds, map[string]*Figure{})
	}
	r := p.rounds[len(p.rounds)-1]
	if r[f.Name] == nil {
		r[f.Name] = &Figure{Name: f.Name, Unit: f.Unit}
	}
	r[f.Name].Runs = append(r[f.Name].Runs, f.Runs...)
}

// parseLog splits a log into phases, in the order they appear; figures
// before any phase marker belong to a phase named "".
func parseLog(r io.Reader) ([]*phase, error) {
	var phases []*phase
	byName := map[string]*phase{}
	cur := func(name string) *phase {
		if p := byName[name]; p != nil {
			return p
		}
		p := &phase{name: name, all: map[string]*Figure{}}
		byName[name] = p
		phases = append(phases, p)
		return p
	}
	var p *phase
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, phaseMarker):
			p = cur(strings.TrimSpace(strings.TrimPrefix(line, phaseMarker)))
		case strings.HasPrefix(line, roundMarker):
			if p == nil {
				p = cur("")
			}
			p.rounds = append(p.rounds, map[string]*Figure{})
		default:
			if f, ok := ParseFigure(line); ok {
				if p == nil {
					p = cur("")
				}
				p.add(f)
			}
		}
	}
	return phases, sc.Err()
}

// ratioValue is shi's median over the baseline's, as the headlines read
// ("round trip / tcp round trip", "throughput / tcp throughput"); whether
// it should be low or high follows the unit.
func ratioValue(shi, base Figure) float64 {
	b := base.Median()
	if b == 0 {
		return 0
	}
	return shi.Median() / b
}

// Summarize reads a log of scripts/bench-remote.sh and prints, for each
// phase, every figure's median and spread (min–max) over all its runs,
// then the ratios of RemoteRatios for each phase that has both figures,
// with the ratio of each round for the spread. The phase named headline
// prints last, its ratios with their goals, so the log's last line is
// the headline of the last ratio measured. It fails if no ratio can be
// computed.
func Summarize(r io.Reader, w io.Writer, headline string) error {
	phases, err := parseLog(r)
	if err != nil {
		return err
	}
	// The headline phase last.
	slices.SortStableFunc(phases, func(a, b *phase) int {
		switch {
		case a.name == headline && b.name != headline:
			return 1
		case b.name == headline && a.name != headline:
			return -1
		}
		return 0
	})
	for _, p := range phases {
		title := p.name
		if title == "" {
			title = "(no phase)"
		}
		fmt.Fprintf(w, "\n%s: median and spread of all runs (%d rounds)\n", title, max(len(p.rounds), 1))
		t := &Table{W: w}
		t.Row("  figure", "median", "min–max", "runs")
		for _, name := range p.order {
			f := p.all[name]
			t.Row("  "+name, f.String(),
				f.format(slices.Min(f.Runs))+"–"+f.format(slices.Max(f.Runs))+" "+f.Unit, strconv.Itoa(len(f.Runs)))
		}
		t.Flush()
	}
	fmt.Fprintln(w)
	n := 0
	for _, p := range phases {
		for _, rt := range RemoteRatios {
			shi, base := p.all[rt.Shi], p.all[rt.Base]
			if shi == nil || base == nil {
				continue
			}
			n++
			fmt.Fprintln(w, ratioLine(p, rt, headline))
		}
	}
	if n == 0 {
		return fmt.Errorf("no ratio: the log has no pair of figures %s", ratioNames())
	}
	return nil
}

// ratioLine is "SHI / BASE [(PHASE)] = R x (rounds: ...[; goal ...])".
func ratioLine(p *phase, rt Ratio, headline string) string {
	shi, base := p.all[rt.Shi], p.all[rt.Base]
	var rounds []string
	for _, r := range p.rounds {
		if s, b := r[rt.Shi], r[rt.Base]; s != nil && b != nil {
			rounds = append(rounds, fmt.Sprintf("%.2f", ratioValue(*s, *b)))
		}
	}
	v := ratioValue(*shi, *base)
	var b strings.Builder
	fmt.Fprintf(&b, "%s / %s", rt.Shi, rt.Base)
	if p.name != headline {
		fmt.Fprintf(&b, " (%s)", p.name)
	}
	fmt.Fprintf(&b, " = %.2fx (each round: %s", v, strings.Join(rounds, " "))
	if p.name == headline && rt.Goal > 0 {
		verdict := "met"
		if shi.higherBetter() && v < rt.Goal || !shi.higherBetter() && v > rt.Goal {
			verdict = "MISSED"
		}
		bound := "at most"
		if shi.higherBetter() {
			bound = "at least"
		}
		fmt.Fprintf(&b, "; goal %s %.1fx: %s", bound, rt.Goal, verdict)
	}
	b.WriteString(")")
	return b.String()
}

func ratioNames() string {
	var s []string
	for _, r := range RemoteRatios {
		s = append(s, fmt.Sprintf("%q and %q", r.Shi, r.Base))
	}
	return strings.Join(s, ", or ")
}
