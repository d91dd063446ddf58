package faultnet

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSetString(t *testing.T) {
	for _, tc := range []struct {
		spec, want, err string
	}{
		{spec: "", want: ""},
		{spec: "delay=5ms", want: "delay=5ms"},
		{spec: "delay=5ms;jitter=1ms loss=0.25", want: "delay=5ms jitter=1ms loss=0.25"},
		{spec: "block=10.77.0.4,10.77.0.3:7946,[::1]", want: "block=10.77.0.3:7946,10.77.0.4,::1"},
		{spec: "block=", want: ""},
		{spec: "delay", err: "not key=value"},
		{spec: "delay=x", err: "delay"},
		{spec: "delay=-1s", err: "negative"},
		{spec: "loss=2", err: "not in [0,1]"},
		{spec: "netem=1", err: "unknown key"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			f := New()
			err := f.Set(tc.spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Set(%q) = %v, want error containing %q", tc.spec, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
			// The canonical form parses back to itself.
			g := New()
			if err := g.Set(f.String()); err != nil || g.String() != tc.want {
				t.Fatalf("round trip: %q, %v", g.String(), err)
			}
		})
	}
}

func TestSetReplaces(t *testing.T) {
	f := New()
	f.SetDelay(time.Second, 0)
	f.Block("a")
	if err := f.Set("loss=0.5"); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "loss=0.5" {
		t.Fatalf("String() = %q", got)
	}
	f.Reset()
	if f.Active() || f.String() != "" {
		t.Fatalf("after Reset: %q", f.String())
	}
}

func TestNilIsPassThrough(t *testing.T) {
	var f *Faults
	if f.Active() || f.Blocked("1.2.3.4") || f.String() != "" {
		t.Fatal("nil Faults reports faults")
	}
	if drop, d := f.Packet("1.2.3.4:1"); drop || d != 0 {
		t.Fatal("nil Faults drops or delays")
	}
	a, b := tcpPair(t, nil)
	if f.Conn(a, "x") != a {
		t.Fatal("nil Faults wrapped a conn")
	}
	_ = b
}

func TestBlockedMatching(t *testing.T) {
	f := New()
	f.Block("10.0.0.1", "10.0.0.2:80", "[fe80::1]")
	for addr, want := range map[string]bool{
		"10.0.0.1":       true,
		"10.0.0.1:9":     true,
		"10.0.0.2":       false,
		"10.0.0.2:80":    true,
		"10.0.0.2:81":    false,
		"[fe80::1]:7946": true,
		"fe80::1":        true,
		"10.0.0.3:80":    false,
	} {
		if got := f.Blocked(addr); got != want {
			t.Errorf("Blocked(%q) = %v, want %v", addr, got, want)
		}
		if drop, _ := f.Packet(addr); drop != want {
			t.Errorf("Packet(%q) drop = %v, want %v", addr, drop, want)
		}
	}
	f.Unblock("10.0.0.1", "10.0.0.2:80")
	if f.Blocked("10.0.0.1:9") || f.Blocked("10.0.0.2:80") || !f.Blocked("fe80::1") {
		t.Fatal("Unblock removed the wrong entries")
	}
}

func TestPacketLossAndDelay(t *testing.T) {
	f := New()
	f.SetLoss(1)
	for range 100 {
		if drop, _ := f.Packet("a:1"); !drop {
			t.Fatal("loss=1 let a packet through")
		}
	}
	f.SetLoss(0.3)
	const n = 20000
	dropped := 0
	for range n {
		if drop, _ := f.Packet("a:1"); drop {
			dropped++
		}
	}
	// 0.3 ± 0.05 fails with probability far below 1e-20.
	if p := float64(dropped) / n; p < 0.25 || p > 0.35 {
		t.Fatalf("loss=0.3 dropped %.3f", p)
	}
	f.SetLoss(0)
	f.SetDelay(10*time.Millisecond, 5*time.Millisecond)
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		drop, d := f.Packet("a:1")
		if drop {
			t.Fatal("dropped with loss=0")
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 5*time.Millisecond || hi > 15*time.Millisecond || hi-lo < 5*time.Millisecond {
		t.Fatalf("delay 10ms±5ms sampled in [%v, %v]", lo, hi)
	}
	f.SetDelay(time.Millisecond, 5*time.Millisecond)
	for range 2000 {
		if _, d := f.Packet("a:1"); d < 0 {
			t.Fatal("negative delay")
		}
	}
}

// TestConcurrentChanges is for -race: settings change while they are read.
func TestConcurrentChanges(t *testing.T) {
	f := New()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 2000 {
				switch i {
				case 0:
					f.Block("a")
					f.Unblock("a")
				case 1:
					f.SetDelay(time.Millisecond, time.Millisecond)
					_ = f.Set("loss=0.1")
				default:
					f.Packet("a:1")
					_ = f.String()
				}
			}
		})
	}
	wg.Wait()
}
