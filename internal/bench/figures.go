package bench

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Figures are how the benchmarks across hosts report to
// scripts/bench-remote.sh. shi's side ("shi bench evtchn|ring -hosts A,B")
// and the TCP baselines each end with lines
//
//	NAME = MEDIAN UNIT (runs: R1 R2 ...)
//
// and the script, which alternates invocations of the two, sets them
// against each other.

// Names of the figures.
const (
	FigRemoteEvtchn = "remote evtchn round trip"
	FigRemoteRing   = "remote ring throughput"
	FigRemoteMap    = "remote grant map"
	FigRemoteUnmap  = "remote grant unmap"
	FigTCPRoundTrip = "tcp round trip"
	FigTCPStream    = "tcp throughput"
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
