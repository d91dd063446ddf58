package bench

import (
	"strings"
	"testing"
	"time"
)

func TestFigureLine(t *testing.T) {
	f := MicrosFigure(FigRemoteEvtchn, []time.Duration{90 * time.Microsecond, 70500 * time.Nanosecond, 80 * time.Microsecond})
	if got, want := f.Line(), "remote evtchn round trip = 80.00 µs (runs: 90.00 70.50 80.00)"; got != want {
		t.Fatalf("line %q, want %q", got, want)
	}
	g := GBFigure(FigTCPStream, []float64{1.5e9, 1.25e9})
	if got, want := g.Line(), "tcp throughput = 1.500 GB/s (runs: 1.500 1.250)"; got != want {
		t.Fatalf("line %q, want %q", got, want)
	}
	for _, x := range []Figure{f, g, GBFigure(FigRemoteRing, []float64{3e8})} {
		back, ok := ParseFigure(x.Line())
		if !ok || back.Name != x.Name || back.Unit != x.Unit || len(back.Runs) != len(x.Runs) {
			t.Fatalf("parse %q: %+v %v", x.Line(), back, ok)
		}
	}
	for _, line := range []string{
		"",
		"evtchn round trip / eventfd round trip = 1.10x (goal: at most 1.2x)",
		"remote evtchn round trip = 80.00 µs",
		"remote evtchn round trip = 80.00 ms (runs: 80.00)",
		"remote evtchn round trip = 80.00 µs (runs: )",
		"path  round trip  runs",
	} {
		if f, ok := ParseFigure(line); ok {
			t.Errorf("parsed %q as %+v", line, f)
		}
	}
}

// A log as scripts/bench-remote.sh writes it: two phases, two rounds
// each, the programs' other output in between.
const benchLog = `== phase: no delay
== round: 1
TCP ping-pong of 16-byte messages with 10.77.0.1:7999, TCP_NODELAY, raw system calls (3 runs of 10000)
tcp round trip = 40.00 µs (runs: 40.00 38.00 44.00)
starting two domains through http://10.77.0.1:7070
path                           round trip  runs
shi event channel (h1 <-> h0)  80.00 µs    80µs 80µs 90µs
remote evtchn round trip = 80.00 µs (runs: 80.00 80.00 90.00)
tcp throughput = 1.000 GB/s (runs: 1.000 1.100 0.900)
remote grant map = 800.00 µs (runs: 800.00)
remote grant unmap = 200.00 µs (runs: 200.00)
remote ring throughput = 0.900 GB/s (runs: 0.900 0.800 0.950)
== round: 2
remote evtchn round trip = 60.00 µs (runs: 60.00 60.00 60.00)
tcp round trip = 50.00 µs (runs: 50.00 50.00 50.00)
== phase: 1 ms delay
== round: 1
tcp round trip = 2100.00 µs (runs: 2100.00)
remote evtchn round trip = 2310.00 µs (runs: 2310.00)
`

func TestSummarize(t *testing.T) {
	var out strings.Builder
	if err := Summarize(strings.NewReader(benchLog), &out, "no delay"); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// The ratios end the output, the headline phase's last, in the order
	// of RemoteRatios. Round trips pool all runs: shi 60 60 60 80 80 90
	// (median 80), tcp 38 40 44 50 50 50 (median 50).
	want := []string{
		"remote evtchn round trip / tcp round trip (1 ms delay) = 1.10x (each round: 1.10)",
		"remote evtchn round trip / tcp round trip = 1.60x (each round: 2.00 1.20; goal at most 1.3x: MISSED)",
		"remote ring throughput / tcp throughput = 0.90x (each round: 0.90; goal at least 0.8x: met)",
	}
	if got := lines[len(lines)-3:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("last lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Medians, spreads and run counts, all runs of the phase pooled.
	fields := map[string]bool{}
	for _, l := range lines {
		fields[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, s := range []string{
		"1 ms delay: median and spread of all runs (1 rounds)",
		"no delay: median and spread of all runs (2 rounds)",
		"remote grant map 800.00 µs 800.00–800.00 µs 1",
		"tcp round trip 50.00 µs 38.00–50.00 µs 6",
		"remote ring throughput 0.900 GB/s 0.800–0.950 GB/s 3",
	} {
		if !fields[s] {
			t.Errorf("summary lacks %q", s)
		}
	}
	if strings.Index(out.String(), "1 ms delay: median") > strings.Index(out.String(), "no delay: median") {
		t.Error("the headline phase's table is not last")
	}
}

func TestSummarizeNoRatio(t *testing.T) {
	var out strings.Builder
	err := Summarize(strings.NewReader("tcp round trip = 40.00 µs (runs: 40.00)\nremote ring throughput = 0.9 GB/s (runs: 0.9)\n"), &out, "no delay")
	if err == nil || !strings.Contains(err.Error(), "no ratio") {
		t.Fatalf("err %v", err)
	}
}

func TestPlacement(t *testing.T) {
	for _, tc := range []struct {
		node, hosts string
		remote      bool
		first, sec  string
		err         string
	}{
		{},
		{node: "h2", first: "h2", sec: "h2"},
		{hosts: "h0,h1", remote: true, first: "h0", sec: "h1"},
		{hosts: " h0 , h1 ", remote: true, first: "h0", sec: "h1"},
		{hosts: "h0,h0", first: "h0", sec: "h0"}, // one host: the local benchmark
		{hosts: "h0", err: "two host names"},
		{hosts: "h0,", err: "two host names"},
		{hosts: ",h1", err: "two host names"},
		{hosts: "h0,h1,h2", err: "two host names"},
		{node: "h0", hosts: "h0,h1", err: "give one of them"},
	} {
		c, err := Placement(tc.node, tc.hosts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Placement(%q, %q): err %v, want %q", tc.node, tc.hosts, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Placement(%q, %q): %v", tc.node, tc.hosts, err)
			continue
		}
		if c.Remote() != tc.remote || c.node(0) != tc.first || c.node(1) != tc.sec {
			t.Errorf("Placement(%q, %q): remote %v, nodes %q %q; want %v %q %q", tc.node, tc.hosts, c.Remote(), c.node(0), c.node(1), tc.remote, tc.first, tc.sec)
		}
	}
}
