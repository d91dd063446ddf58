package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"shi/internal/domain/domaintest"
)

// TestMain lets the test binary be a benchmark's second process (baseline_linux.go) or
// one of its domains.
func TestMain(m *testing.M) {
	RunChild()
	if os.Getenv("SHI_BENCH_DOMAIN") != "" {
		if err := DomainMain(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func domainsConfig(e *domaintest.Env) DomainsConfig {
	return DomainsConfig{API: e.APIURL, Xenstore: e.XenstoreSocket, Exe: []string{os.Args[0]}, Env: []string{"SHI_BENCH_DOMAIN=1"}}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// The benchmarks at toy sizes: they run end to end and print their table.
func TestEvtchnBench(t *testing.T) {
	e := domaintest.Start(t)
	var out strings.Builder
	if err := RunEvtchn(context.Background(), EvtchnConfig{DomainsConfig: domainsConfig(e), Rounds: 300, Runs: 3}, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if !strings.HasPrefix(lastLine(out.String()), "evtchn round trip / eventfd round trip = ") {
		t.Fatalf("last line %q", lastLine(out.String()))
	}
	if len(e.Manager.List()) != 0 {
		t.Fatal("benchmark domains left behind")
	}
}

// TestHostsPlacement: -hosts A,A is the single-host benchmark on A, last
// line and all; with two hosts the second domain goes to the second
// host (here one the cluster lacks, so its create fails, naming it) and
// the first is not left behind.
func TestHostsPlacement(t *testing.T) {
	e := domaintest.Start(t)
	cfg := domainsConfig(e)
	cfg.Hosts = [2]string{e.Host, e.Host}
	var out strings.Builder
	if err := RunEvtchn(context.Background(), EvtchnConfig{DomainsConfig: cfg, Rounds: 100, Runs: 1}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(lastLine(out.String()), "evtchn round trip / eventfd round trip = ") {
		t.Fatalf("-hosts A,A: last line %q", lastLine(out.String()))
	}
	cfg.Hosts = [2]string{e.Host, "nosuchhost"}
	err := RunEvtchn(context.Background(), EvtchnConfig{DomainsConfig: cfg, Rounds: 100, Runs: 1}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-b: ") || !strings.Contains(err.Error(), "nosuchhost") {
		t.Fatalf("second domain on a host that does not exist: %v", err)
	}
	t.Log(err)
	for _, d := range e.Manager.List() {
		t.Errorf("domain %s (id %d) left behind", d.Name, d.ID)
	}
}

func TestRingBench(t *testing.T) {
	e := domaintest.Start(t)
	var out strings.Builder
	cfg := RingConfig{DomainsConfig: domainsConfig(e), Bytes: 8<<20 + 4096*3 + 16, Chunk: 16 << 10, RingPages: 4, Runs: 2, MapRounds: 20}
	if err := RunRing(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if !strings.HasPrefix(lastLine(out.String()), "ring throughput / unix socket throughput = ") {
		t.Fatalf("last line %q", lastLine(out.String()))
	}
}

// TestDomainDiesAtStart: a benchmark whose domains die at start fails at
// once, saying how a domain ended and showing its last output, instead of
// waiting minutes for a result.
func TestDomainDiesAtStart(t *testing.T) {
	e := domaintest.Start(t)
	cfg := DomainsConfig{API: e.APIURL, Xenstore: e.XenstoreSocket,
		Exe: []string{"/bin/sh", "-c", "echo starting up; echo 'benchdomain: no event channel here' >&2; exit 3", "sh"}}
	errc := make(chan error, 1)
	go func() {
		errc <- RunEvtchn(context.Background(), EvtchnConfig{DomainsConfig: cfg, Rounds: 10, Runs: 1}, io.Discard)
	}()
	var err error
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("the benchmark still waits 30 s after its domains died")
	}
	if err == nil {
		t.Fatal("the benchmark succeeded with dead domains")
	}
	t.Log(err)
	for _, want := range []string{"ended before its result came", "exit code 3", "starting up", "benchdomain: no event channel here"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
}
