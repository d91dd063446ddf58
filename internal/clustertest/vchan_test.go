package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"shi/api"
	"shi/guest/vchan"
	"shi/guest/xs"
	"shi/internal/abi"
	"shi/internal/domain/domaintest"
)

// Domain programs of the guest/vchan tests: the first domain of a
// crossPair serves the vchan, the second connects to it; both then run
// GV_MODE.
func init() {
	domaintest.Register("gvchan-server", gvchanServer)
	domaintest.Register("gvchan-client", gvchanClient)
}

func gvEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

func gvSelf() abi.DomID {
	n, _ := strconv.Atoi(os.Getenv("SHI_DOMID"))
	return abi.DomID(n)
}

func gvPath(d abi.DomID) string { return fmt.Sprintf("/local/domain/%d/data/vchan", d) }

func gvchanServer() error {
	c, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	peer, err := domaintest.WaitDomid(c, fmt.Sprintf("/local/domain/%d/data/peer", gvSelf()), time.Minute)
	if err != nil {
		return err
	}
	cfg := vchan.Config{XenStore: c, ReadMin: gvEnvInt("READ_MIN", 0), WriteMin: gvEnvInt("WRITE_MIN", 0)}
	conn, err := cfg.Listen(abi.DomID(peer), gvPath(gvSelf()))
	if err != nil {
		return err
	}
	return gvRun(conn, true)
}

func gvchanClient() error {
	peer := abi.DomID(gvEnvInt("PEER", 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var cfg vchan.Config
	conn, err := cfg.DialContext(ctx, peer, gvPath(peer))
	if err != nil {
		return err
	}
	return gvRun(conn, false)
}

// gvRun runs GV_MODE on a connected end.
func gvRun(conn *vchan.Conn, server bool) error {
	domaintest.Stuck = conn.String
	l, r := conn.Orders()
	fmt.Printf("connected, orders %d/%d\n", l, r)
	switch os.Getenv("GV_MODE") {
	case "duplex":
		return gvDuplex(conn, server)
	case "echo":
		return gvEcho(conn, server)
	case "doomed":
		// Stream until killed.
		buf := make([]byte, 64<<10)
		go io.Copy(io.Discard, conn)
		for {
			if _, err := conn.Write(buf); err != nil {
				return fmt.Errorf("the doomed end's write failed: %w", err)
			}
		}
	case "survivor":
		return gvSurvive(conn)
	}
	return fmt.Errorf("unknown GV_MODE %q", os.Getenv("GV_MODE"))
}

// gvDuplex writes TOTAL bytes of its own stream and reads TOTAL bytes of
// the peer's at once, checking every byte against the peer's generator.
// Then the client closes, and the server checks it reads io.EOF.
func gvDuplex(conn *vchan.Conn, server bool) error {
	total := int64(gvEnvInt("TOTAL", 64<<20))
	me, peer := uint64(1), uint64(2)
	if !server {
		me, peer = peer, me
	}
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		gen := rand.NewChaCha8([32]byte{byte(me)})
		sizes := rand.New(rand.NewPCG(me, 1))
		buf := make([]byte, 256<<10)
		for left := total; left > 0; {
			n := int(min(left, int64(1+sizes.IntN(len(buf)))))
			gen.Read(buf[:n])
			if _, err := conn.Write(buf[:n]); err != nil {
				werr <- fmt.Errorf("write at %d: %w", total-left, err)
				return
			}
			left -= int64(n)
		}
		werr <- nil
	}()
	gen := rand.NewChaCha8([32]byte{byte(peer)})
	sizes := rand.New(rand.NewPCG(peer, 2))
	buf, want := make([]byte, 200<<10), make([]byte, 200<<10)
	for got := int64(0); got < total; {
		n, err := conn.Read(buf[:min(total-got, int64(1+sizes.IntN(len(buf))))])
		gen.Read(want[:n])
		if !bytes.Equal(buf[:n], want[:n]) {
			return fmt.Errorf("bytes %d..%d differ from what the peer wrote", got, got+int64(n))
		}
		got += int64(n)
		if err != nil {
			return fmt.Errorf("read at %d of %d: %w", got, total, err)
		}
	}
	if err := <-werr; err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Printf("moved %d bytes each way in %v: %.0f MB/s each way\n", total, took.Round(time.Millisecond), float64(total)/took.Seconds()/1e6)
	if server {
		if n, err := conn.Read(buf); err != io.EOF {
			return fmt.Errorf("after the client closed: read %d, %v; want io.EOF", n, err)
		}
	}
	return conn.Close()
}

// gvEcho: the client sends ROUNDS messages of 1..64 bytes and waits for
// each to come back; the server echoes until io.EOF. Every message
// crosses while the other end sleeps, so each needs its notify bit.
func gvEcho(conn *vchan.Conn, server bool) error {
	buf, got := make([]byte, 64), make([]byte, 64)
	if server {
		for {
			n, err := conn.Read(buf)
			if err == io.EOF {
				return conn.Close()
			}
			if err != nil {
				return err
			}
			if _, err := conn.Write(buf[:n]); err != nil {
				return err
			}
		}
	}
	rounds := gvEnvInt("ROUNDS", 20000)
	start := time.Now()
	slowest := time.Duration(0)
	for i := range rounds {
		n := 1 + i%len(buf)
		for j := range n {
			buf[j] = byte(i*7 + j)
		}
		t0 := time.Now()
		if _, err := conn.Write(buf[:n]); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		// A stall would show as this deadline, not as a hung test.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, got[:n]); err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		slowest = max(slowest, time.Since(t0))
		if !bytes.Equal(got[:n], buf[:n]) {
			return fmt.Errorf("round %d: the echo differs", i)
		}
	}
	took := time.Since(start)
	fmt.Printf("%d round trips in %v: %v each, slowest %v\n", rounds, took.Round(time.Millisecond), took/time.Duration(rounds), slowest.Round(time.Microsecond))
	return conn.Close()
}

// gvSurvive reads the doomed peer's stream until it ends, which must be
// io.EOF, then checks that writing fails, and says so in XenStore.
func gvSurvive(conn *vchan.Conn) error {
	c, err := xs.OpenEnv()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var got int64
	for {
		n, err := conn.Read(buf)
		got += int64(n)
		if got > 1<<20 && n > 0 && got-int64(n) <= 1<<20 {
			if err := c.Write(fmt.Sprintf("/local/domain/%d/data/streaming", gvSelf()), []byte("1")); err != nil {
				return err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w, want io.EOF", got, err)
		}
	}
	if _, err := conn.Write([]byte("anyone?")); !errors.Is(err, vchan.ErrPeerGone) {
		return fmt.Errorf("write to the gone peer: %v, want ErrPeerGone", err)
	}
	fmt.Printf("saw the peer gone after %d bytes\n", got)
	return conn.Close()
}

// gvLogOutput shows what a domain printed.
func gvLogOutput(t *testing.T, h *Host, d api.Domain) {
	t.Helper()
	o := waitEnd(t, h, d, 3*time.Minute)
	if o.Exit != "exit code 0" {
		t.Fatalf("domain %s on %s: %s\n%s", d.Name, h.Name, o.Exit, strings.Join(o.Lines, "\n"))
	}
	for _, l := range o.Lines {
		if !strings.HasPrefix(l, "link") {
			t.Logf("%s on %s: %s", d.Name, h.Name, l)
		}
	}
}

// TestGuestVchan runs guest/vchan between real domains on test hosts:
// on one host and across two, a checksummed stream each way at once,
// echoes with lazy notification, and a peer destroyed or its host
// killed mid-stream.
func TestGuestVchan(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	long := os.Getenv("SHI_LONG") != ""
	c := Start(t, Options{Hosts: 3})
	hosts := c.Hosts()
	pair := func(t *testing.T, a, b int, env ...string) {
		t.Helper()
		s, k := crossPair(t, c, a, b, "gvsrv", "gvchan-server", "gvcli", "gvchan-client", env...)
		gvLogOutput(t, hosts[b], k)
		gvLogOutput(t, hosts[a], s)
	}
	big := "TOTAL=67108864" // 64 MiB each way: the suite shares 2 cores
	if long {
		big = "TOTAL=1073741824"
	}
	rounds := "ROUNDS=20000"
	if long {
		rounds = "ROUNDS=1000000"
	}
	t.Run("one host, 1 MiB rings", func(t *testing.T) {
		pair(t, 0, 0, "GV_MODE=duplex", big, "READ_MIN=1048576", "WRITE_MIN=1048576")
	})
	t.Run("two hosts, 1 MiB rings", func(t *testing.T) {
		pair(t, 0, 1, "GV_MODE=duplex", big, "READ_MIN=1048576", "WRITE_MIN=1048576")
	})
	t.Run("two hosts, in-page rings", func(t *testing.T) {
		pair(t, 0, 1, "GV_MODE=duplex", "TOTAL=4194304")
	})
	t.Run("one host, echoes", func(t *testing.T) {
		pair(t, 0, 0, "GV_MODE=echo", rounds)
	})
	t.Run("two hosts, echoes", func(t *testing.T) {
		pair(t, 0, 1, "GV_MODE=echo", rounds)
	})
	// The doomed end streams; the survivor must see io.EOF, promptly.
	doom := func(t *testing.T, a, b int, serverDies bool, kill func(doomed api.Domain, on *Host)) {
		srvMode, cliMode := "GV_MODE=survivor", "GV_MODE=doomed"
		if serverDies {
			srvMode, cliMode = cliMode, srvMode
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		env := []string{"READ_MIN=65536", "WRITE_MIN=65536"}
		if os.Getenv("SHI_LONG") == "" {
			env = append(env, domaintest.EnvWatchdog+"=90s")
		}
		s := createOn(t, ctx, hosts[a], domaintest.Config("gvsrv", "gvchan-server", append([]string{srvMode}, env...)))
		k := createOn(t, ctx, hosts[b], domaintest.Config("gvcli", "gvchan-client", append([]string{cliMode, "PEER=" + strconv.Itoa(int(s.ID))}, env...)))
		if err := hosts[a].XS().Write(fmt.Sprintf("/local/domain/%d/data/peer", s.ID), []byte(strconv.Itoa(int(k.ID)))); err != nil {
			t.Fatal(err)
		}
		survivor, sh, doomed, dh := s, hosts[a], k, hosts[b]
		if serverDies {
			survivor, sh, doomed, dh = k, hosts[b], s, hosts[a]
		}
		if _, err := domaintest.WaitRead(sh.XS(), fmt.Sprintf("/local/domain/%d/data/streaming", survivor.ID), time.Minute); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		kill(doomed, dh)
		o := waitEnd(t, sh, survivor, 100*time.Second)
		took := time.Since(start)
		if o.Exit != "exit code 0" {
			t.Fatalf("survivor: %s\n%s", o.Exit, strings.Join(o.Lines, "\n"))
		}
		t.Logf("the survivor saw its peer gone %v after", took.Round(time.Millisecond))
		if took > 20*time.Second {
			t.Errorf("took %v", took)
		}
	}
	destroy := func(doomed api.Domain, on *Host) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := patientAPI(on).DestroyDomain(ctx, doomed.Name); err != nil {
			t.Errorf("destroy: %v", err)
		}
	}
	t.Run("one host, client destroyed", func(t *testing.T) { doom(t, 0, 0, false, destroy) })
	t.Run("two hosts, server destroyed", func(t *testing.T) { doom(t, 0, 1, true, destroy) })
	t.Run("two hosts, client destroyed", func(t *testing.T) { doom(t, 0, 1, false, destroy) })
	// Last: it takes a host away.
	t.Run("two hosts, client's host killed", func(t *testing.T) {
		doom(t, 0, 2, false, func(api.Domain, *Host) { hosts[2].Kill() })
	})
}
