package transport

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTunables keep the mesh's shape but shorten waits, so reconnects in
// tests take milliseconds.
var testTunables = tunables{
	handshakeTimeout: 5 * time.Second,
	backoffMin:       2 * time.Millisecond,
	backoffMax:       50 * time.Millisecond,
	giveUp:           time.Minute,
	writeTimeout:     10 * time.Second,
	maxQueue:         defaultTunables.maxQueue,
}

// testNet is a set of meshes on loopback that resolve each other by name.
type testNet struct {
	t          testing.TB
	mu         sync.Mutex
	addrs      map[string]string
	unresolved map[string]bool // names Resolve pretends not to know
}

func newTestNet(t testing.TB) *testNet {
	return &testNet{t: t, addrs: map[string]string{}, unresolved: map[string]bool{}}
}

func (n *testNet) resolve(host string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, ok := n.addrs[host]
	return a, ok && !n.unresolved[host]
}

func (n *testNet) setResolvable(host string, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unresolved[host] = !ok
}

// node is a test mesh with its log.
type node struct {
	*Mesh
	log *logBuf
}

// start starts a mesh called name listening on addr ("" = any port) and
// closes it when the test ends. edit adjusts the config and tunables.
func (n *testNet) start(name, addr string, edit func(*Config, *tunables)) *node {
	n.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		n.t.Fatal(err)
	}
	lb := &logBuf{t: n.t, name: name}
	cfg := Config{
		Name:     name,
		Listener: ln,
		Resolve:  n.resolve,
		Handle:   func(string, Msg) {},
		Logger:   slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	tun := testTunables
	if edit != nil {
		edit(&cfg, &tun)
	}
	m, err := newMesh(cfg, tun)
	if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	n.addrs[name] = m.Addr().String()
	n.mu.Unlock()
	n.t.Cleanup(func() { m.Close() })
	return &node{Mesh: m, log: lb}
}

// logBuf keeps a mesh's log for assertions and echoes it to the test log.
type logBuf struct {
	t    testing.TB
	name string
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.t.Logf("%s: %s", l.name, bytes.TrimSpace(p))
	return len(p), nil
}

func (l *logBuf) contains(subs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.buf.String(), "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// connected reports whether m's writer to host has a connection.
func (m *Mesh) connected(host string) bool {
	m.mu.Lock()
	p := m.peers[host]
	m.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn != nil
}

// inboundFrom is how many accepted control connections from host m has.
func (m *Mesh) inboundFrom(host string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.inbound[host]; h != nil {
		return len(h.conns)
	}
	return 0
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// gen is the i-th message of a test stream: every slot depends on i, and
// Data sizes vary from empty to MaxData.
func gen(i int) Msg {
	u := uint32(i)
	m := Msg{Kind: Kind(1 + i%14), Flags: uint16(i), ID: uint64(i) + 1, Errno: u * 3,
		Status: int16(-i), FromDom: uint16(i >> 3), ToDom: uint16(i >> 5), FromPort: u + 1, ToPort: u + 2,
		Ref: u * 7, Frame: u ^ 0xffff, Arg: [4]uint32{u, u << 1, u << 2, ^u}}
	n := i % 97
	if i%1000 == 999 {
		n = MaxData
	}
	if n > 0 {
		m.Data = make([]byte, n)
		for j := range m.Data {
			m.Data[j] = byte(i + j)
		}
	}
	return m
}

func sameMsg(a, b Msg) bool {
	ad, bd := a.Data, b.Data
	a.Data, b.Data = nil, nil
	return reflect.DeepEqual(a, b) && bytes.Equal(ad, bd)
}
