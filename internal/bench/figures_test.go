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
