package nstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "shint-"

// netnsDir is where ip-netns(8) keeps its named namespaces.
const netnsDir = "/var/run/netns"

// MaxHosts is the most hosts one cluster can have (one /24).
const MaxHosts = 250

// Options configures New.
type Options struct {
	// Hosts is the number of hosts, 1 to MaxHosts.
	Hosts int
}

// Cluster is a set of test hosts on one switch.
type Cluster struct {
	t     testing.TB
	name  string // Prefix + "<pid>-<seq>"
	sw    string // the switch namespace
	hosts []*Host

	// mu guards the fields below.
	mu      sync.Mutex
	procs   []*Proc
	bridges map[string]bool // bridges created in the switch
	closed  bool
}

// Host is one test host: a network namespace with one interface, eth0.
type Host struct {
	// Index is the host's number, from 0.
	Index int
	// IP is eth0's address, "10.77.0.(Index+1)".
	IP string
	// NS is the namespace's name (as in `ip netns exec NS`).
	NS string

	c    *Cluster
	port string // the veth end in the switch, "h<Index>"
}

var clusterSeq atomic.Int64

// New builds a cluster of opts.Hosts hosts and removes it when the test
// ends. It skips the test with -short or when not root.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("nstest: test hosts (network namespaces, real processes) are skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("nstest: test hosts need root to create network namespaces")
	}
	if opts.Hosts < 1 || opts.Hosts > MaxHosts {
		t.Fatalf("nstest: Hosts = %d, want 1 to %d", opts.Hosts, MaxHosts)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("nstest: the ip command (iproute2) is needed: %v", err)
	}
	removeStale()

	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), clusterSeq.Add(1))
	c := &Cluster{t: t, name: name, sw: name + "-sw", bridges: map[string]bool{}}
	t.Cleanup(c.close)
	if err := c.build(opts.Hosts); err != nil {
		t.Fatalf("nstest: building %d hosts: %v", opts.Hosts, err)
	}
	return c
}

func (c *Cluster) build(n int) error {
	if err := run("ip", "netns", "add", c.sw); err != nil {
		return err
	}
	if err := c.addBridge("br0"); err != nil {
		return err
	}
	for i := range n {
		h := &Host{
			Index: i,
			IP:    fmt.Sprintf("10.77.0.%d", i+1),
			NS:    fmt.Sprintf("%s-h%d", c.name, i),
			c:     c,
			port:  fmt.Sprintf("h%d", i),
		}
		c.hosts = append(c.hosts, h)
		if err := run("ip", "netns", "add", h.NS); err != nil {
			return err
		}
		if err := runBatch(c.sw,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", h.port, h.NS),
			fmt.Sprintf("link set %s master br0 up", h.port),
		); err != nil {
			return err
		}
		if err := runBatch(h.NS,
			fmt.Sprintf("addr add %s/24 dev eth0", h.IP),
			"link set eth0 up",
			"link set lo up",
		); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) addBridge(br string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bridges[br] {
		return nil
	}
	// forward_delay 0: a port that comes up (Heal) forwards at once.
	if err := runBatch(c.sw,
		fmt.Sprintf("link add %s type bridge forward_delay 0", br),
		fmt.Sprintf("link set %s up", br),
	); err != nil {
		return err
	}
	c.bridges[br] = true
	return nil
}

// Name returns the cluster's name, the prefix of its namespaces.
func (c *Cluster) Name() string { return c.name }

// Hosts returns the hosts.
func (c *Cluster) Hosts() []*Host { return slices.Clone(c.hosts) }

// Host returns host i.
func (c *Cluster) Host(i int) *Host {
	if i < 0 || i >= len(c.hosts) {
		c.t.Fatalf("nstest: no host %d in a cluster of %d", i, len(c.hosts))
	}
	return c.hosts[i]
}

// Cut pulls host i's cable: its port on the switch goes down, so nothing
// reaches it or leaves it. Processes on it keep running.
func (c *Cluster) Cut(i int) {
	c.t.Helper()
	if err := run("ip", "-n", c.sw, "link", "set", c.Host(i).port, "down"); err != nil {
		c.t.Fatalf("nstest: cut host %d: %v", i, err)
	}
}

// Heal plugs host i's cable back in.
func (c *Cluster) Heal(i int) {
	c.t.Helper()
	if err := run("ip", "-n", c.sw, "link", "set", c.Host(i).port, "up"); err != nil {
		c.t.Fatalf("nstest: heal host %d: %v", i, err)
	}
	c.flushNeighbours()
}

// flushNeighbours forgets the ARP entries that failed while hosts were
// apart, so that traffic resumes at once rather than after the kernel's
// ARP retry interval (1 s).
func (c *Cluster) flushNeighbours() {
	for _, h := range c.hosts {
		_ = run("ip", "-n", h.NS, "neigh", "flush", "all")
	}
}

// Partition splits the hosts into groups that reach only each other:
// each group gets a bridge of its own. Hosts in no group stay together on
// the main bridge. Unpartition undoes it; Cut and Heal are independent.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	seen := map[int]bool{}
	for g, hosts := range groups {
		br := fmt.Sprintf("part%d", g)
		if err := c.addBridge(br); err != nil {
			c.t.Fatalf("nstest: partition: %v", err)
		}
		for _, i := range hosts {
			if seen[i] {
				c.t.Fatalf("nstest: partition: host %d in two groups", i)
			}
			seen[i] = true
			c.setBridge(i, br)
		}
	}
}

// Unpartition puts every host back on the main bridge.
func (c *Cluster) Unpartition() {
	c.t.Helper()
	for i := range c.hosts {
		c.setBridge(i, "br0")
	}
	c.flushNeighbours()
}

func (c *Cluster) setBridge(i int, br string) {
	c.t.Helper()
	if err := run("ip", "-n", c.sw, "link", "set", c.Host(i).port, "master", br); err != nil {
		c.t.Fatalf("nstest: move host %d to %s: %v", i, br, err)
	}
}

// Command returns a command that runs argv inside the host, for short
// tools (tc, ss, ip); use Start for processes that run alongside the test.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, argv...)...)
}

// Do runs fn on an OS thread that is inside the host's network namespace,
// so sockets fn opens (net.Dial, net.Listen) belong to the host and keep
// belonging to it afterwards. Goroutines fn starts run outside it.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// If the thread cannot be put back, it stays locked and dies with
		// this goroutine rather than run other goroutines in the host.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(netnsDir + "/" + h.NS)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("nstest: setns %s: %w", h.NS, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// close kills every process, reports their output if the test failed, and
// deletes the namespaces (which takes the veths and bridges with them).
func (c *Cluster) close() {
	c.mu.Lock()
	c.closed = true
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("nstest: host %d: %s: %s\n%s", p.host.Index, strings.Join(p.argv, " "), p.exitStatus(), p.tail(64<<10))
		}
	}
	var errs []string
	for _, h := range c.hosts {
		if err := deleteNS(h.NS); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := deleteNS(c.sw); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		c.t.Errorf("nstest: cleanup: %s", strings.Join(errs, "; "))
	}
}

// deleteNS kills what still runs in a namespace and deletes it.
func deleteNS(ns string) error {
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if _, err := os.Stat(netnsDir + "/" + ns); os.IsNotExist(err) {
		return nil
	}
	return run("ip", "netns", "del", ns)
}

// removeStale deletes namespaces (and build directories) left by test
// processes that no longer exist. Those of live processes, such as the
// tests of other packages running in parallel, are left alone.
func removeStale() {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if pid, ok := stalePID(e.Name(), Prefix); ok && !processExists(pid) {
			_ = deleteNS(e.Name())
		}
	}
	dirs, _ := os.ReadDir(os.TempDir())
	for _, e := range dirs {
		if pid, ok := stalePID(e.Name(), binDirPrefix); ok && !processExists(pid) {
			_ = os.RemoveAll(os.TempDir() + "/" + e.Name())
		}
	}
}

// stalePID parses the pid out of "<prefix><pid>-...".
func stalePID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	p, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid > 0
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

func run(argv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// runBatch runs several ip commands in namespace ns with one ip process.
func runBatch(ns string, cmds ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch (%s): %v: %s", ns, strings.Join(cmds, "; "), err, bytes.TrimSpace(out))
	}
	return nil
}
