package nstest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shi/internal/faultnet"
	"shi/internal/membership"
	"shi/internal/nstest"
)

// The test binary doubles as a membership node: TestMain runs memberChild
// when memberEnv is set. It prints one line per event:
//
//	event <type> <name> <addr> <unix nanoseconds>
const (
	memberEnv    = "NSTEST_MEMBER_NAME"
	memberBind   = "NSTEST_MEMBER_BIND"
	memberJoin   = "NSTEST_MEMBER_JOIN"
	memberPreset = "NSTEST_MEMBER_PRESET" // "default" or "test"
	memberFaults = "NSTEST_MEMBER_FAULTS" // faultnet spec
)

func memberChild() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := membership.DefaultTestConfig()
	if os.Getenv(memberPreset) == "default" {
		cfg = membership.DefaultConfig()
	}
	cfg.Name = os.Getenv(memberEnv)
	cfg.BindAddr = os.Getenv(memberBind)
	cfg.BindPort = membership.DefaultPort
	cfg.Logger = log
	cfg.Meta = membership.Meta{CPUs: 1, Version: "nstest"}
	if j := os.Getenv(memberJoin); j != "" {
		cfg.Join = strings.Split(j, ",")
	}
	if spec := os.Getenv(memberFaults); spec != "" {
		cfg.Faults = faultnet.New()
		if err := cfg.Faults.Set(spec); err != nil {
			log.Error("faults", "err", err)
			return 2
		}
	}
	m, err := membership.New(cfg)
	if err != nil {
		log.Error("new", "err", err)
		return 1
	}
	go func() {
		for ev := range m.Events() {
			fmt.Printf("event %s %s %s %d\n", ev.Type, ev.Member.Name, ev.Member.Addr, time.Now().UnixNano())
		}
	}()
	// Seeds that are not up yet are retried by the reconnect loop.
	_, _ = m.Join(cfg.Join)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	m.Leave(time.Second)
	m.Shutdown()
	return 0
}

// memberHosts runs one membership node per host.
type memberHosts struct {
	t     testing.TB
	c     *nstest.Cluster
	bin   string
	env   []string
	procs []*nstest.Proc
}

func startMembers(t testing.TB, n int, preset string, extraEnv ...string) *memberHosts {
	c := nstest.New(t, nstest.Options{Hosts: n})
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for _, h := range c.Hosts() {
		seeds = append(seeds, h.IP)
	}
	env := append([]string{memberJoin + "=" + strings.Join(seeds, ","), memberPreset + "=" + preset}, extraEnv...)
	mh := &memberHosts{t: t, c: c, bin: bin, env: env}
	for i := range n {
		mh.procs = append(mh.procs, nil)
		mh.start(i)
	}
	for i := range n {
		for j := range n {
			mh.waitEvent(i, "join", j, 1)
		}
	}
	return mh
}

func (mh *memberHosts) start(i int) {
	h := mh.c.Host(i)
	env := append([]string{memberEnv + "=" + name(i), memberBind + "=" + h.IP}, mh.env...)
	p, err := h.Start(context.Background(), []string{mh.bin}, env)
	if err != nil {
		mh.t.Fatal(err)
	}
	mh.procs[i] = p
}

func name(i int) string { return "h" + strconv.Itoa(i) }

func eventRE(typ string, j int) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^event ` + typ + ` ` + name(j) + ` \S+ (\d+)$`)
}

// count returns how many events typ about host j host i has printed.
func (mh *memberHosts) count(i int, typ string, j int) int {
	return len(eventRE(typ, j).FindAllString(mh.procs[i].Output(), -1))
}

// waitEvent waits until host i has printed the n-th event typ about host
// j, and returns when host i saw it.
func (mh *memberHosts) waitEvent(i int, typ string, j, n int) time.Time {
	mh.t.Helper()
	re := eventRE(typ, j)
	var when time.Time
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := mh.procs[i].WaitOutput(ctx, func(out string) bool {
		m := re.FindAllStringSubmatch(out, -1)
		if len(m) < n {
			return false
		}
		ns, _ := strconv.ParseInt(m[n-1][1], 10, 64)
		when = time.Unix(0, ns)
		return true
	})
	if err != nil {
		mh.t.Fatalf("%s never saw %s %s (#%d): %v\n%s", name(i), typ, name(j), n, err, mh.procs[i].Output())
	}
	return when
}

// TestMembershipOnHosts runs membership between real hosts, one process
// per network namespace, with DefaultTestConfig: a killed host is declared
// failed (the time is logged) and taken back when restarted, a frozen host
// fails and comes back when thawed, and a host cut off for longer than
// memberlist remembers it merges back when healed.
func TestMembershipOnHosts(t *testing.T) {
	mh := startMembers(t, 3, "test")
	t.Logf("killed h2 declared failed after: %v", killAndMeasure(mh, 2))

	// Freeze h1 until h0 declares it failed; thawed, it refutes and is
	// alive again.
	if err := mh.procs[1].Freeze(); err != nil {
		t.Fatal(err)
	}
	mh.waitEvent(0, "failed", 1, 1)
	if err := mh.procs[1].Thaw(); err != nil {
		t.Fatal(err)
	}
	mh.waitEvent(0, "join", 1, 2)

	// Cut h1 off for longer than memberlist keeps dead members
	// (GossipToTheDeadTime); only the reconnect loop merges it back.
	mh.c.Cut(1)
	mh.waitEvent(0, "failed", 1, 2)
	mh.waitEvent(1, "failed", 0, 1)
	time.Sleep(membership.DefaultTestConfig().GossipToTheDeadTime + time.Second) // the length of the fault
	start := time.Now()
	mh.c.Heal(1)
	mh.waitEvent(0, "join", 1, 3)
	mh.waitEvent(1, "join", 0, 2)
	t.Logf("cut host merged back %v after the heal", time.Since(start).Round(time.Millisecond))
}

// BenchmarkFailureDetection measures how long 3 test hosts with
// DefaultConfig (memberlist's LAN timings) take to declare a killed host
// failed, without and with 5 ms of added one-way delay from faultnet.
// Each iteration takes several seconds:
//
//	go test ./internal/nstest -run '^$' -bench FailureDetection -benchtime 3x
func BenchmarkFailureDetection(b *testing.B) {
	for _, bc := range []struct{ name, faults string }{
		{"delay=0", ""},
		{"delay=5ms", "delay=5ms"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			mh := startMembers(b, 3, "default", memberFaults+"="+bc.faults)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				total += killAndMeasure(mh, 2)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/detect")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// killAndMeasure kills host k, waits until every other host declared it
// failed and returns the slowest of their times; then it restarts the host
// and waits until everyone has it back.
func killAndMeasure(mh *memberHosts, k int) time.Duration {
	mh.t.Helper()
	failed := make([]int, len(mh.procs))
	joins := make([]int, len(mh.procs))
	for i := range mh.procs {
		failed[i], joins[i] = mh.count(i, "failed", k), mh.count(i, "join", k)
	}
	killed := time.Now()
	if err := mh.procs[k].Kill(); err != nil {
		mh.t.Fatal(err)
	}
	var slowest time.Duration
	for i := range mh.procs {
		if i != k {
			slowest = max(slowest, mh.waitEvent(i, "failed", k, failed[i]+1).Sub(killed))
		}
	}
	mh.start(k)
	for i := range mh.procs {
		if i != k {
			mh.waitEvent(i, "join", k, joins[i]+1)
		}
	}
	return slowest.Round(time.Millisecond)
}
