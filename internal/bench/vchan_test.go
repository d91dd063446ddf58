package bench

import (
	"strings"
	"testing"
)

func TestUnixPingPong(t *testing.T) {
	r, err := UnixPingPong(200, vchanMsg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 200 || r.Duration <= 0 || r.PerOp() <= 0 {
		t.Fatalf("result %+v", r)
	}
	t.Log(r)
}

// scripts/bench-remote.sh vchan: the vchan ratios end the summary,
// throughput last.
func TestSummarizeVchan(t *testing.T) {
	log := `== phase: no delay
== round: 1
tcp round trip = 40.00 µs (runs: 40.00 38.00 44.00)
tcp throughput = 1.000 GB/s (runs: 1.000 1.100 0.900)
remote vchan round trip = 100.00 µs (runs: 100.00 90.00 110.00)
remote vchan throughput = 0.700 GB/s (runs: 0.700 0.600 0.750)
`
	var out strings.Builder
	if err := Summarize(strings.NewReader(log), &out, "no delay"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"remote vchan round trip / tcp round trip = 2.50x (each round: 2.50)",
		"remote vchan throughput / tcp throughput = 0.70x (each round: 0.70; goal at least 0.8x: MISSED)",
	}
	if got := lines[len(lines)-2:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("last lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
