package clustertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/internal/libxentest"
)

// TestVchanBridge runs "shi vchan" against Debian's vchan-socket-proxy in
// either role (on one host and across two test hosts), and against itself
// with large rings across two: a few MiB each way at once through the two bridges,
// checksummed. The proxies run as xen_libs domains over shi's libxenvchan
// replacements; shi vchan over guest/vchan.
func TestVchanBridge(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	libs := libxentest.Build(t)
	c := Start(t, Options{Hosts: 2, BootstrapExpect: 1, Args: []string{"-xen-libs", libs}})
	// Domains run under uids of their own: the binary must be where they
	// can reach it.
	shi := filepath.Join(libs, "shi")
	bin, err := os.ReadFile(c.Bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shi, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	proxy := libxentest.Proxy(libs)
	size := 4 << 20
	if os.Getenv("SHI_LONG") != "" {
		size = 256 << 20
	}
	big := []string{"-read-min", "1048576", "-write-min", "1048576"}
	for i, tc := range []struct {
		name     string
		srv, cli bridge
		hosts    int // 1: both on host 0; 2: the server on host 0, the client on host 1
		size     int
	}{
		{"shi server, proxy client", bridge{cmd: shi, shi: true}, bridge{cmd: proxy}, 1, size},
		{"proxy server, shi client", bridge{cmd: proxy}, bridge{cmd: shi, shi: true}, 1, size},
		{"shi server, proxy client", bridge{cmd: shi, shi: true}, bridge{cmd: proxy}, 2, size},
		{"proxy server, shi client", bridge{cmd: proxy}, bridge{cmd: shi, shi: true}, 2, size},
		{"shi both, 1 MiB rings", bridge{cmd: shi, shi: true, flags: big}, bridge{cmd: shi, shi: true}, 2, 8 * size},
	} {
		where := map[int]string{1: "one host", 2: "two hosts"}[tc.hosts]
		t.Run(tc.name+", "+where, func(t *testing.T) {
			p := startBridges(t, c, tc.srv, tc.cli, 0, tc.hosts-1, fmt.Sprintf("vb%d", i))
			up, down, dur := p.stream(t, tc.size, 2*time.Minute)
			mbs := func(d time.Duration) float64 { return float64(tc.size) / d.Seconds() / 1e6 }
			t.Logf("%s, %s: %d MiB each way at once in %v: client to server %.1f MB/s, server to client %.1f MB/s",
				tc.name, where, tc.size>>20, dur.Round(time.Millisecond), mbs(up), mbs(down))
			p.destroy(t)
		})
	}
	t.Run("shi client, server destroyed", func(t *testing.T) {
		p := startBridges(t, c, bridge{cmd: proxy}, bridge{cmd: shi, shi: true}, 0, 1, "vbd")
		p.peerDies(t, "server")
		p.destroy(t)
	})
}

// bridge is one side of a vchan-to-socket bridge: vchan-socket-proxy or
// shi vchan, with flags.
type bridge struct {
	cmd   string
	shi   bool
	flags []string
}

func (b bridge) argv(mode string, rest ...string) []string {
	var a []string
	if b.shi {
		a = append(a, "vchan")
	}
	a = append(a, "-m", mode)
	a = append(a, b.flags...)
	return append(a, rest...)
}

func (b bridge) config(name, cmd string, args ...string) string {
	if b.shi {
		// shi vchan is Go; it needs no C libraries, and uses its agent
		// connection itself (no console helper).
		return programConfig(name, `console = "direct"`, cmd, args...)
	}
	return proxyConfig(name, cmd, args...)
}

// startBridges starts a pair of bridges of any kind: the server srv on
// host s, the client cli on host k.
func startBridges(t *testing.T, c *Cluster, srv, cli bridge, s, k int, prefix string) *proxies {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := libxentest.WorldDir("shi-vb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &proxies{c: c, srvHost: c.Host(s), cliHost: c.Host(k), cliSock: filepath.Join(dir, "cli.sock")}
	srvSock := filepath.Join(dir, "srv.sock")
	p.srvLn, err = net.Listen("unix", srvSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.srvLn.Close() })
	if err := os.Chmod(srvSock, 0o777); err != nil {
		t.Fatal(err)
	}
	// The server needs its client's domid, known once the client exists.
	quoted := make([]string, 0, 8)
	for _, a := range srv.argv("server") {
		quoted = append(quoted, libxentest.Shell(a))
	}
	script := fmt.Sprintf(`until p=$(xenstore-read /local/domain/$SHI_DOMID/data/peer 2>/dev/null); do sleep 0.05; done; exec %s %s "$p" data/vchan %s`,
		libxentest.Shell(srv.cmd), strings.Join(quoted, " "), libxentest.Shell(srvSock))
	p.srv = createOn(t, ctx, p.srvHost, srv.config(prefix+"-srv", "/bin/sh", "-c", script))
	path := fmt.Sprintf("/local/domain/%d/data/vchan", p.srv.ID)
	p.cli = createOn(t, ctx, p.cliHost, cli.config(prefix+"-cli", cli.cmd, cli.argv("client", "-s", "data/state", strconv.Itoa(int(p.srv.ID)), path, p.cliSock)...))
	if err := p.srvHost.XS().Write(fmt.Sprintf("/local/domain/%d/data/peer", p.srv.ID), []byte(strconv.Itoa(int(p.cli.ID)))); err != nil {
		t.Fatal(err)
	}
	// Both bridges write the state once they listen (between bind and
	// listen, a connect is refused).
	state := fmt.Sprintf("/local/domain/%d/data/state", p.cli.ID)
	if err := Poll(ctx, 20*time.Millisecond, func() bool { v, err := p.cliHost.XS().Read(state); return err == nil && string(v) == "running" }); err != nil {
		t.Fatalf("the client did not listen on %s: %v\n%s", p.cliSock, err, p.output(t))
	}
	return p
}
