package clustertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shi/api"
	"shi/internal/libxentest"
)

// TestXenLibs runs unmodified Xen programs as shi domains over shi's
// libxenevtchn/libxengnttab (xen_libs = 1), on one cluster of two test
// hosts.
//
// Debian's vchan-socket-proxy, server and client: on one host and across
// two, a few MiB through them each way at once, checksummed; and a peer
// domain destroyed mid-stream, which the surviving proxy reports by
// closing its socket, as it does when the client's host is killed. The
// throughput it logs is a correctness check's,
// not a goal: the proxy uses 1 and 2 KiB rings inside the control page
// and waits in select().
//
// A program of libxenvchan with rings in separate pages: see pagedRings.
func TestXenLibs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	libs := libxentest.Build(t)
	libxentest.NeedProxy(t, libs)
	echo := buildVchanEcho(t, libs)
	c := Start(t, Options{Hosts: 2, BootstrapExpect: 1, Args: []string{"-xen-libs", libs}})
	size := 4 << 20
	if os.Getenv("SHI_LONG") != "" {
		size = 256 << 20
	}
	if mib, err := strconv.Atoi(os.Getenv("SHI_VCHAN_PROXY_MIB")); err == nil && mib > 0 {
		size = mib << 20 // scripts/bench-vchan-proxy.sh
	}
	hosts := []struct {
		name     string
		srv, cli int // hosts
	}{
		{"one host", 0, 0},
		{"two hosts", 0, 1},
	}
	for _, tc := range hosts {
		t.Run("proxy "+tc.name, func(t *testing.T) {
			p := startProxies(t, c, libs, tc.srv, tc.cli, "vp")
			up, down, dur := p.stream(t, size, 2*time.Minute+time.Duration(size>>20)*time.Second)
			mbs := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
			t.Logf("vchan-socket-proxy, %s: %d MiB each way at once in %v: client to server %.1f MB/s, server to client %.1f MB/s",
				tc.name, size>>20, dur.Round(time.Millisecond), mbs(up), mbs(down))
			p.destroy(t)
		})
	}
	for _, victim := range []string{"server", "client"} {
		t.Run("proxy "+victim+" destroyed mid-stream", func(t *testing.T) {
			p := startProxies(t, c, libs, 0, 1, "vd")
			p.peerDies(t, victim)
			p.destroy(t)
		})
	}
	for _, tc := range hosts {
		t.Run("libxenvchan paged rings "+tc.name, func(t *testing.T) {
			pagedRings(t, c, echo, tc.srv, tc.cli)
		})
	}
	// Last: it takes host 1 down.
	t.Run("proxy client's host killed mid-stream", func(t *testing.T) {
		p := startProxies(t, c, libs, 0, 1, "vk")
		p.peerDies(t, "client host")
		p.destroy(t)
	})
}

// proxies is a vchan-socket-proxy server and client, each a domain, and
// the two Unix sockets the test talks to them through.
type proxies struct {
	c        *Cluster
	srv, cli api.Domain
	srvHost  *Host
	cliHost  *Host
	srvLn    net.Listener // the server proxy connects here for each vchan client
	cliSock  string       // the client proxy listens here
	gone     *Host        // a host the test killed
}

// startProxies starts the server proxy on host s and the client proxy on
// host k (startBridges with vchan-socket-proxy on both sides).
func startProxies(t *testing.T, c *Cluster, libs string, s, k int, prefix string) *proxies {
	t.Helper()
	proxy := bridge{cmd: libxentest.Proxy(libs)}
	return startBridges(t, c, proxy, proxy, s, k, prefix)
}

// proxyConfig is the config of a domain running cmd with the replacement
// Xen libraries.
func proxyConfig(name, cmd string, args ...string) string {
	return programConfig(name, "xen_libs = 1", cmd, args...)
}

// programConfig is the config of a domain running cmd, with one more
// line of config.
// The link library prints its state on SIGUSR1 (see watch).
func programConfig(name, extra, cmd string, args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return fmt.Sprintf("name = %q\ncmd = %q\nargs = [%s]\nenv = [\"SHI_LINK_DEBUG=1\"]\n%s\n", name, cmd, strings.Join(q, ", "), extra)
}

// output is both proxies' last output, for failures.
func (p *proxies) output(t *testing.T) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, x := range []struct {
		h *Host
		d api.Domain
	}{{p.srvHost, p.srv}, {p.cliHost, p.cli}} {
		o, err := patientAPI(x.h).DomainOutput(ctx, strconv.Itoa(int(x.d.ID)), x.h.Name)
		fmt.Fprintf(&b, "%s (dom%d on %s): running %v %s %v\n  %s\n", x.d.Name, x.d.ID, x.h.Name, o.Running, o.Exit, err, strings.Join(o.Lines, "\n  "))
	}
	return b.String()
}

// connect opens a stream: the test connects to the client proxy, which
// connects the vchan, whereupon the server proxy connects to the test.
func (p *proxies) connect(t *testing.T, timeout time.Duration) (cli, srv net.Conn) {
	t.Helper()
	cli, err := net.Dial("unix", p.cliSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	p.srvLn.(*net.UnixListener).SetDeadline(time.Now().Add(timeout))
	srv, err = p.srvLn.Accept()
	if err != nil {
		t.Fatalf("the server proxy did not connect: %v\n%s", err, p.output(t))
	}
	t.Cleanup(func() { srv.Close() })
	return cli, srv
}

// stream sends size bytes each way at once and checks them; it returns
// how long each direction took, and both.
func (p *proxies) stream(t *testing.T, size int, timeout time.Duration) (up, down, both time.Duration) {
	t.Helper()
	cli, srv := p.connect(t, timeout)
	deadline := time.Now().Add(timeout)
	cli.SetDeadline(deadline)
	srv.SetDeadline(deadline)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	took := make([]time.Duration, 2)
	var got [2]atomic.Int64
	wg.Add(4)
	go func() { defer wg.Done(); errs[0] = send(cli, 1, size) }()
	go func() { defer wg.Done(); errs[1] = send(srv, 2, size) }()
	go func() {
		defer wg.Done()
		errs[2] = receive(countingReader{srv, &got[0]}, 1, size)
		took[0] = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		errs[3] = receive(countingReader{cli, &got[1]}, 2, size)
		took[1] = time.Since(start)
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stalled := p.watch(done, &got, cli, srv)
	both = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("stream of %d bytes each way (client to server %d, server to client %d received): %v\n%s%s",
			size, got[0].Load(), got[1].Load(), err, stalled, p.output(t))
	}
	return took[0], took[1], both
}

// stallAfter is how long a stream may make no progress either way before
// the test asks both bridges what they see and fails.
const stallAfter = 20 * time.Second

// watch waits for done; if neither direction moves for stallAfter, it
// has both bridges print their state (SIGUSR1: shi vchan prints its
// vchan, the link library of either its links and pages when
// SHI_LINK_DEBUG is set), ends the stream and says so.
func (p *proxies) watch(done chan struct{}, got *[2]atomic.Int64, conns ...net.Conn) string {
	last, moved := int64(-1), time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return ""
		case <-tick.C:
		}
		if n := got[0].Load() + got[1].Load(); n != last {
			last, moved = n, time.Now()
			continue
		}
		if time.Since(moved) < stallAfter {
			continue
		}
		signalDomain(p.srvHost, p.srv.ID, syscall.SIGUSR1)
		signalDomain(p.cliHost, p.cli.ID, syscall.SIGUSR1)
		time.Sleep(time.Second) // for them to print
		for _, c := range conns {
			c.Close()
		}
		<-done
		return fmt.Sprintf("no progress either way for %v: both bridges asked for their state (below)\n", stallAfter)
	}
}

// countingReader counts what it reads.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// signalDomain sends sig to the programs of domain id on h that debug
// their links: h's agent's descendants (the test hosts share this
// machine's process table with other tests' clusters) whose environment
// names the domain and sets SHI_LINK_DEBUG (not its console helper). A C
// program's select() fails with EINTR: the signal is for a test that
// has failed.
func signalDomain(h *Host, id uint32, sig syscall.Signal) {
	h.mu.Lock()
	agent := 0
	if h.proc != nil {
		agent = h.proc.Pid()
	}
	h.mu.Unlock()
	want := []byte(fmt.Sprintf("\x00SHI_DOMID=%d\x00", id))
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !descends(pid, agent) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		env = append([]byte{0}, env...)
		if err == nil && bytes.Contains(env, want) && bytes.Contains(env, []byte("\x00SHI_LINK_DEBUG=")) &&
			!bytes.Contains(cmd, []byte("console-helper")) {
			syscall.Kill(pid, sig)
		}
	}
}

// data is the pseudo-random stream seed, in 64 KiB chunks.
func data(seed uint64, size int, each func([]byte) error) error {
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 64<<10)
	for n := 0; n < size; n += len(buf) {
		b := buf[:min(len(buf), size-n)]
		for i := 0; i+8 <= len(b); i += 8 {
			v := r.Uint64()
			for j := range 8 {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		if err := each(b); err != nil {
			return err
		}
	}
	return nil
}

func send(w io.Writer, seed uint64, size int) error {
	return data(seed, size, func(b []byte) error { _, err := w.Write(b); return err })
}

// receive reads size bytes and compares their SHA-256 with the stream
// sent with seed.
func receive(r io.Reader, seed uint64, size int) error {
	want := sha256.New()
	data(seed, size, func(b []byte) error { want.Write(b); return nil })
	got := sha256.New()
	n, err := io.CopyN(got, r, int64(size))
	if err != nil {
		return fmt.Errorf("received %d of %d bytes: %w", n, size, err)
	}
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		return fmt.Errorf("%d bytes received, but their checksum differs from what was sent", n)
	}
	return nil
}

// peerDies streams until data flows both ways, destroys the victim proxy's
// domain ("server" or "client") or kills the client's host ("client
// host"), and checks that the survivor closes its socket (it reports the
// vchan's end that way, and waits for the next connection) in bounded
// time.
func (p *proxies) peerDies(t *testing.T, victim string) {
	t.Helper()
	cli, srv := p.connect(t, time.Minute)
	deadline := time.Now().Add(time.Minute)
	cli.SetDeadline(deadline)
	srv.SetDeadline(deadline)
	const endless = 1 << 40
	go send(cli, 3, endless)
	go send(srv, 4, endless)
	flowing := func(r io.Reader) error {
		_, err := io.CopyN(io.Discard, r, 256<<10)
		return err
	}
	if err := errors.Join(flowing(cli), flowing(srv)); err != nil {
		t.Fatalf("before the destroy: %v\n%s", err, p.output(t))
	}
	vh, vd, survivor := p.srvHost, p.srv, cli
	if victim != "server" {
		vh, vd, survivor = p.cliHost, p.cli, srv
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if victim == "client host" {
		vh.Kill() // membership declares it failed within about a second
		p.gone = vh
	} else if err := patientAPI(vh).DestroyDomain(ctx, vd.Name); err != nil {
		t.Fatal(err)
	}
	// The survivor's socket ends (EOF, or a reset while we still write).
	n, err := io.Copy(io.Discard, survivor)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the surviving proxy still had the stream open %v after its peer (%s) went (%d bytes more)\n%s", time.Since(start).Round(time.Millisecond), victim, n, p.output(t))
	}
	what := victim + " destroyed"
	if p.gone != nil {
		what = victim + " killed"
	}
	t.Logf("%s: the survivor closed its socket %v later (%d bytes after that, %v)", what, time.Since(start).Round(time.Millisecond), n, err)
}

// destroy ends both proxies (what is left of them).
func (p *proxies) destroy(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, x := range []struct {
		h *Host
		d api.Domain
	}{{p.srvHost, p.srv}, {p.cliHost, p.cli}} {
		if x.h == p.gone {
			continue
		}
		if err := patientAPI(x.h).DestroyDomain(ctx, x.d.Name); err != nil && !strings.Contains(err.Error(), "no such domain") {
			t.Errorf("destroy %s: %v", x.d.Name, err)
		}
	}
}

// descends reports whether process pid descends from process ancestor.
func descends(pid, ancestor int) bool {
	for i := 0; pid > 1 && i < 64; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
		if pid == ancestor {
			return true
		}
	}
	return false
}
