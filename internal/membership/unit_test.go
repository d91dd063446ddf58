package membership

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReconnector(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const s = time.Second
	r := newReconnector([]string{"seed:1", "self:1"}, "self:1", s, 4*s, 60*s)

	step := func(now time.Time, want ...string) {
		t.Helper()
		got := r.due(now)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("due at %v (-want +got):\n%s", now.Sub(t0), diff)
		}
		for _, a := range got {
			r.tried(a, now)
		}
	}

	// A seed is tried at once (we are alone), never ourselves.
	step(at(0), "seed:1")
	// Backoff doubles from the interval: next try after 2 s, then 4 s (cap).
	step(at(1 * s))
	step(at(2*s), "seed:1")
	step(at(5 * s))
	step(at(6*s), "seed:1")
	step(at(10*s), "seed:1")
	// A live member at the seed's address: the seed rests.
	r.found("a", "seed:1")
	step(at(20 * s))

	// Members a (at the seed's address) and b are lost: both tried after
	// one interval, with backoff.
	r.lost("a", "seed:1", at(20*s))
	r.lost("b", "b:1", at(20*s))
	step(at(20 * s))
	step(at(21*s), "b:1", "seed:1")
	step(at(22 * s))
	step(at(23*s), "b:1", "seed:1")
	// b comes back at a new address: its old address is dropped.
	r.found("b", "b:2")
	step(at(30*s), "seed:1")
	// Lost members are forgotten after the timeout; seeds are not.
	r.lost("c", "c:1", at(30*s))
	step(at(89*s), "c:1", "seed:1")
	step(at(91 * s))
	step(at(93*s), "seed:1")
	if _, ok := r.targets["c:1"]; ok {
		t.Fatal("c:1 kept after the timeout")
	}

	// A conflict waits for the reclaim time; found ends it.
	r = newReconnector(nil, "self:1", s, 4*s, 60*s)
	r.conflict("d", "d:2", at(100*s), at(95*s))
	step(at(99 * s))
	step(at(100*s), "d:2")
	r.found("d", "d:2")
	step(at(110 * s))
}

func TestWithPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":       "10.0.0.1:7946",
		"10.0.0.1:1":     "10.0.0.1:1",
		"::1":            "[::1]:7946",
		"[::1]:2":        "[::1]:2",
		"host.example":   "host.example:7946",
		"host.example:3": "host.example:3",
	} {
		if got := withPort(in, 7946); got != want {
			t.Errorf("withPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateConfig(t *testing.T) {
	good := func() Config {
		c := DefaultTestConfig()
		c.Name = "a"
		c.Logger = slog.New(slog.DiscardHandler)
		return c
	}
	c := good()
	if err := ValidateConfig(&c); err != nil {
		t.Fatal(err)
	}
	c = DefaultConfig()
	c.Name, c.Logger = "a", slog.New(slog.DiscardHandler)
	if err := ValidateConfig(&c); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "Name"},
		{"no logger", func(c *Config) { c.Logger = nil }, "Logger"},
		{"bind", func(c *Config) { c.BindAddr = "localhost" }, "BindAddr"},
		{"port", func(c *Config) { c.BindPort = 70000 }, "BindPort"},
		{"advertise", func(c *Config) { c.AdvertiseAddr = "x" }, "AdvertiseAddr"},
		{"key", func(c *Config) { c.EncryptKey = make([]byte, 15) }, "EncryptKey"},
		{"probe", func(c *Config) { c.ProbeTimeout = 2 * c.ProbeInterval }, "ProbeTimeout"},
		{"suspicion", func(c *Config) { c.SuspicionMult = 0 }, "SuspicionMult"},
		{"reclaim", func(c *Config) { c.DeadNodeReclaimTime = 0 }, "DeadNodeReclaimTime"},
		{"reconnect", func(c *Config) { c.ReconnectMaxBackoff = c.ReconnectInterval / 2 }, "Reconnect"},
		{"join", func(c *Config) { c.Join = []string{""} }, "Join"},
		{"meta", func(c *Config) { c.Meta.CPUs = -1 }, "cpus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			if err := ValidateConfig(&c); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ValidateConfig = %v, want error containing %q", err, tc.err)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	for _, n := range []int{16, 24, 32} {
		k := bytes.Repeat([]byte{7}, n)
		got, err := ParseKey(base64.StdEncoding.EncodeToString(k))
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	for _, s := range []string{"", "!!", base64.StdEncoding.EncodeToString(make([]byte, 20))} {
		if _, err := ParseKey(s); err == nil {
			t.Fatalf("ParseKey(%q) accepted", s)
		}
	}
}

func TestLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	l.Printf("[DEBUG] memberlist: hidden")
	l.Printf("[INFO] memberlist: hello %d", 1)
	l.Printf("[WARN] memberlist: careful")
	l.Printf("[ERR] memberlist: broken")
	l.Printf("no level")
	want := `level=INFO msg="hello 1" from=memberlist
level=WARN msg=careful from=memberlist
level=ERROR msg=broken from=memberlist
level=INFO msg="no level" from=memberlist
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}
