package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"shi/internal/bench"
)

func TestBenchTCPUsage(t *testing.T) {
	if code, _, errs := run(t, "", "benchtcp"); code != 2 || !strings.Contains(errs, "usage: shi benchtcp serve") {
		t.Errorf("no subcommand: %d %q", code, errs)
	}
	if code, _, errs := run(t, "", "benchtcp", "frob"); code != 2 || !strings.Contains(errs, `unknown subcommand "frob"`) {
		t.Errorf("unknown subcommand: %d %q", code, errs)
	}
	if code, _, errs := run(t, "", "benchtcp", "ping"); code != 1 || !strings.Contains(errs, "-addr IP:PORT is required") {
		t.Errorf("ping without -addr: %d %q", code, errs)
	}
	var out strings.Builder
	Usage(&out)
	if strings.Contains(out.String(), "benchtcp") {
		t.Error("shi help lists the internal benchtcp")
	}
}

var figureLine = regexp.MustCompile(`(?m)^(tcp round trip = [0-9.]+ µs|tcp throughput = [0-9.]+ GB/s) \(runs: [0-9. ]+\)$`)

// serve, then stream and a delayed ping against it (an undelayed ping
// needs its server in another process: bench.StartTCPServer, tested in
// internal/bench), then the server stops with its context.
func TestBenchTCPServeStreamPing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuffer
	env := &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	served := make(chan int, 1)
	go func() { served <- Run(ctx, env, []string{"benchtcp", "serve", "-listen", "127.0.0.1:0"}) }()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not say where it listens: %q %q", out.String(), errb.String())
		}
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
	}
	for _, args := range [][]string{
		{"benchtcp", "stream", "-addr", addr, "-mib", "2", "-chunk", "16", "-runs", "2"},
		{"benchtcp", "ping", "-addr", addr, "-rounds", "20", "-runs", "2", "-delay-ms", "0.5"},
	} {
		code, stdout, errs := run(t, "", args...)
		if code != 0 || !figureLine.MatchString(stdout) {
			t.Errorf("%s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, errs)
		}
		t.Log(stdout)
	}
	cancel()
	select {
	case code := <-served:
		if code != 0 {
			t.Errorf("serve: exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still runs 10 s after its context ended")
	}
}

func TestBenchTCPSummary(t *testing.T) {
	log := filepath.Join(t.TempDir(), "bench.log")
	text := "== phase: no delay\n== round: 1\n" +
		bench.MicrosFigure(bench.FigTCPRoundTrip, []time.Duration{40 * time.Microsecond}).Line() + "\n" +
		bench.MicrosFigure(bench.FigRemoteEvtchn, []time.Duration{48 * time.Microsecond}).Line() + "\n"
	if err := os.WriteFile(log, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "", "benchtcp", "summary", log)
	want := "remote evtchn round trip / tcp round trip = 1.20x (each round: 1.20; goal at most 1.3x: met)"
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "\n"+want) {
		t.Fatalf("exit %d\n%s%s\nwant last line %q", code, out, errs, want)
	}
	if code, _, errs := run(t, "", "benchtcp", "summary", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing log: %d %q", code, errs)
	}
}
