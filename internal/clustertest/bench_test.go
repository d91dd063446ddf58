package clustertest

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/guest/xs"
	"shi/internal/nstest"
)

// benchEnv switches the cluster benchmarks on; they take minutes and
// print figures rather than check them.
const benchEnv = "SHI_BENCH_CLUSTER"

// TestBenchCluster measures, in one run, a 3-host cluster against a
// one-host dev agent: shi bench xenstore through a follower and through
// the leader, replicated single-key write latency, and how long the
// others take to see a SIGKILLed host failed, with memberlist's and
// Raft's default timings; then the same with 5 ms of delay added between
// hosts. Run it with scripts/bench-cluster.sh.
func TestBenchCluster(t *testing.T) {
	if os.Getenv(benchEnv) == "" {
		t.Skipf("cluster benchmarks run only with %s=1 (scripts/bench-cluster.sh)", benchEnv)
	}
	out := io.Writer(os.Stdout)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	writes := 1000
	if s := os.Getenv("SHI_BENCH_WRITES"); s != "" {
		writes, _ = strconv.Atoi(s)
	}
	kills := 3

	// The dev agent runs on a test host of its own, as the cluster's
	// agents do.
	dev := startDev(t, ctx)
	// TLS=1: the cluster's agents talk mutual TLS (Raft, forwarded
	// commits, the data plane) and serve the API over HTTPS.
	withTLS := os.Getenv("TLS") == "1"
	c := Start(t, Options{Hosts: 3, DefaultTiming: true, Ready: 2 * time.Minute, TLS: withTLS})
	l := c.Leader(ctx)
	f := c.Host((l + 1) % 3)
	lh := c.Host(l)
	tlsNote := ""
	if withTLS {
		tlsNote = ", mutual TLS between the hosts"
	}
	fmt.Fprintf(out, "\nshi cluster benchmarks: 3 test hosts (%s leads%s) vs one dev agent, memberlist and Raft default timings\n", lh.Name, tlsNote)

	devBench := benchXenstore(t, ctx, dev.host, dev.env)
	folBench := benchXenstore(t, ctx, c.NS.Host(f.Index), f.Env())
	ldrBench := benchXenstore(t, ctx, c.NS.Host(l), lh.Env())
	fmt.Fprintf(out, "\nshi bench xenstore, 300 domains       sequential  parallel\n")
	fmt.Fprintf(out, "  dev agent, 1 host                   %-10s  %s\n", secs(devBench.seq), secs(devBench.par))
	fmt.Fprintf(out, "  3 hosts, through a follower         %-10s  %s\n", secs(folBench.seq), secs(folBench.par))
	fmt.Fprintf(out, "  3 hosts, through the leader         %-10s  %s\n", secs(ldrBench.seq), secs(ldrBench.par))
	fmt.Fprintf(out, "  follower / dev                      %-10.2f  %.2f\n", folBench.seq.Seconds()/devBench.seq.Seconds(), folBench.par.Seconds()/devBench.par.Seconds())
	fmt.Fprintf(out, "  leader / dev                        %-10.2f  %.2f\n", ldrBench.seq.Seconds()/devBench.seq.Seconds(), ldrBench.par.Seconds()/devBench.par.Seconds())

	devLat := writeLatency(t, dev.socket, writes)
	ldrLat := writeLatency(t, lh.Socket, writes)
	folLat := writeLatency(t, f.Socket, writes)
	fmt.Fprintf(out, "\nsingle-key write latency through guest/xs, %d writes   p50        p99\n", writes)
	fmt.Fprintf(out, "  dev agent                                  %-10s %s\n", ms(devLat.p50), ms(devLat.p99))
	fmt.Fprintf(out, "  3 hosts, on the leader                     %-10s %s\n", ms(ldrLat.p50), ms(ldrLat.p99))
	fmt.Fprintf(out, "  3 hosts, on a follower                     %-10s %s\n", ms(folLat.p50), ms(folLat.p99))

	det := detectFailures(t, ctx, c, kills)
	fmt.Fprintf(out, "\nfailure detection of a SIGKILLed follower (until both others' /v1/nodes show it failed)\n")
	fmt.Fprintf(out, "  %d kills: %s; median %s\n", kills, joinSecs(det), secs(median(det)))

	// The same with 5 ms of one-way delay on every agent's gossip and Raft
	// traffic: 10 ms round trips between hosts. (A follower's forward to
	// the leader's API is not delayed: the fault hook is on the gossip
	// and Raft transports only.)
	c.SetFaultsAll(ctx, Faults{DelayMs: 5})
	l = c.Leader(ctx)
	lh, f = c.Host(l), c.Host((l+1)%3)
	folBench5 := benchXenstore(t, ctx, c.NS.Host(f.Index), f.Env())
	ldrLat5 := writeLatency(t, lh.Socket, writes/4)
	folLat5 := writeLatency(t, f.Socket, writes/4)
	det5 := detectFailures(t, ctx, c, kills, Faults{DelayMs: 5})
	fmt.Fprintf(out, "\nwith 5 ms added between hosts (fault hook on every agent)\n")
	fmt.Fprintf(out, "  shi bench xenstore through a follower   sequential %s, parallel %s (%.2f, %.2f x dev)\n",
		secs(folBench5.seq), secs(folBench5.par), folBench5.seq.Seconds()/devBench.seq.Seconds(), folBench5.par.Seconds()/devBench.par.Seconds())
	fmt.Fprintf(out, "  write latency on the leader             p50 %s, p99 %s\n", ms(ldrLat5.p50), ms(ldrLat5.p99))
	fmt.Fprintf(out, "  write latency on a follower             p50 %s, p99 %s\n", ms(folLat5.p50), ms(folLat5.p99))
	fmt.Fprintf(out, "  failure detection, %d kills              %s; median %s\n", kills, joinSecs(det5), secs(median(det5)))

	fmt.Fprintf(out, "\nreplicated write p50 (leader) / dev write p50 = %.1f\n", ldrLat.p50.Seconds()/devLat.p50.Seconds())
	fmt.Fprintf(out, "replicated write p50 (follower) / dev write p50 = %.1f\n", folLat.p50.Seconds()/devLat.p50.Seconds())
}

type devAgent struct {
	host   *nstest.Host
	socket string
	env    []string
}

// startDev runs "shi agent -dev" on a test host of its own.
func startDev(t *testing.T, ctx context.Context) devAgent {
	dir, err := os.MkdirTemp("", "shict-dev-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after nstest's, which kills the agent
	ns := nstest.New(t, nstest.Options{Hosts: 1})
	h := ns.Host(0)
	sock := dir + "/xs.sock"
	// A dev agent takes no tokens, so it serves on loopback only: the
	// namespace's own, where the benchmark's clients run.
	url := "http://127.0.0.1:7070"
	p, err := h.Start(ctx, []string{nstest.BuildShi(t), "agent", "-dev", "-xenstore-socket", sock, "-api", "127.0.0.1:7070"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitOutput(wctx, func(s string) bool { return strings.Contains(s, api.EnvAgent+"="+url) }); err != nil {
		t.Fatal(err)
	}
	return devAgent{host: h, socket: sock, env: []string{api.EnvXenstore + "=" + sock, api.EnvAgent + "=" + url}}
}

type benchResult struct{ seq, par time.Duration }

var benchLine = regexp.MustCompile(`(?m)^(sequential|parallel)\s+\d+\s+([0-9.]+) s`)

// benchXenstore runs "shi bench xenstore" on host h against the agent env
// names.
func benchXenstore(t *testing.T, ctx context.Context, h *nstest.Host, env []string) benchResult {
	t.Helper()
	cmd := h.Command(ctx, nstest.BuildShi(t), "bench", "xenstore")
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("shi bench xenstore (%v): %v\n%s", env, err, b)
	}
	var r benchResult
	for _, m := range benchLine.FindAllStringSubmatch(string(b), -1) {
		s, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(s * float64(time.Second))
		if m[1] == "sequential" {
			r.seq = d
		} else {
			r.par = d
		}
	}
	if r.seq == 0 || r.par == 0 {
		t.Fatalf("shi bench xenstore: cannot parse its output:\n%s", b)
	}
	return r
}

type latency struct{ p50, p99 time.Duration }

// writeLatency times n single-key writes through one guest/xs connection,
// after a few to warm up.
func writeLatency(t *testing.T, socket string, n int) latency {
	t.Helper()
	x, err := xs.Open(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	ds := make([]time.Duration, 0, n)
	for i := -20; i < n; i++ {
		start := time.Now()
		if err := x.Write("/bench/latency", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("write through %s: %v", socket, err)
		}
		if i >= 0 {
			ds = append(ds, time.Since(start))
		}
	}
	slices.Sort(ds)
	return latency{p50: ds[len(ds)/2], p99: ds[len(ds)*99/100]}
}

// detectFailures kills a follower k times and measures how long until
// both other hosts' /v1/nodes show it failed; after each it restarts the
// follower (setting faults on it again) and waits for the cluster.
func detectFailures(t *testing.T, ctx context.Context, c *Cluster, k int, faults ...Faults) []time.Duration {
	t.Helper()
	var out []time.Duration
	for range k {
		l := c.Leader(ctx)
		v := c.Host((l + 1) % 3)
		obs := others(3, v.Index)
		start := time.Now()
		v.Kill()
		err := Poll(ctx, 10*time.Millisecond, func() bool {
			for _, i := range obs {
				if s, err := c.Host(i).StateOf(ctx, v); err != nil || s != "failed" {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("%s never seen failed: %v", v.Name, err)
		}
		out = append(out, time.Since(start))
		v.Start()
		for _, f := range faults {
			if err := v.SetFaults(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		c.Leader(ctx)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func joinSecs(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(s, ", ") + " s"
}
