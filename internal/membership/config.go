package membership

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"shi/internal/faultnet"
)

// DefaultPort is the gossip port (UDP and TCP) when none is given.
const DefaultPort = 7946

// Config configures a Membership. Start from DefaultConfig or
// DefaultTestConfig and set Name, BindAddr, Logger and Meta.
type Config struct {
	// Name is this host's name (the agent's -name). It must be unique in
	// the cluster; a host that comes back under the same name at another
	// address replaces the old entry once that one is dead (see
	// DeadNodeReclaimTime).
	Name string

	// BindAddr is the IP to listen on for gossip (the agent's -bind).
	// "0.0.0.0" listens everywhere and advertises a private address.
	BindAddr string

	// BindPort is the gossip port, for both UDP and TCP. 0 picks a free
	// port (tests); Addr tells which.
	BindPort int

	// AdvertiseAddr and AdvertisePort are what other hosts use to reach us,
	// when that differs from the bound address (NAT). Empty and 0 mean
	// "the bound address".
	AdvertiseAddr string
	AdvertisePort int

	// Join lists the seed addresses (the agent's -join), "IP" or "IP:PORT";
	// a seed without a port uses BindPort, or DefaultPort if that is 0.
	// Join(cfg.Join) contacts them at start; after that the reconnect loop
	// keeps retrying any seed that is not a live member, so hosts may
	// start in any order.
	Join []string

	// EncryptKey turns on gossip encryption and authentication with
	// memberlist's keyring: 16, 24 or 32 bytes for AES-128, -192 or -256.
	// Hosts with another key (or none) cannot join. ParseKey decodes the
	// agent's -encrypt flag. Nil means no encryption.
	EncryptKey []byte
	// Keys are more keys gossip accepts beside EncryptKey (the primary,
	// which encrypts what we send): a keyring a rotation left (keyring.go).
	Keys [][]byte

	// Logger receives our log and memberlist's, at memberlist's levels.
	// It must be set.
	Logger *slog.Logger

	// Faults, if set, wraps the gossip transport so that tests can delay,
	// drop and cut gossip. Nil in production.
	Faults *faultnet.Faults

	// Meta is what this host gossips at start; UpdateMeta changes it.
	Meta Meta

	// ProbeInterval is how often we probe a random member; ProbeTimeout is
	// how long we wait for its ack (about the 99th percentile RTT) before
	// asking others to probe it indirectly.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration

	// SuspicionMult scales how long a member stays suspect before it is
	// declared failed: SuspicionMult * max(1, log10(N)) * ProbeInterval.
	// SuspicionMaxTimeoutMult bounds the stretched timeout that applies
	// while no other host confirms the suspicion.
	SuspicionMult           int
	SuspicionMaxTimeoutMult int

	// GossipInterval is how often queued messages are sent to a few random
	// members outside of probes.
	GossipInterval time.Duration

	// GossipToTheDeadTime is how long memberlist keeps gossiping to a
	// member after it failed (giving it a chance to refute), after which
	// memberlist forgets it. Beyond that only the reconnect loop can find
	// it again.
	GossipToTheDeadTime time.Duration

	// PushPullInterval is how often we exchange full state with one random
	// member over TCP. It heals missed gossip, including an address change
	// that was refused while the old entry was still alive.
	PushPullInterval time.Duration

	// TCPTimeout bounds a TCP connect and each full-state exchange; it is
	// also how long a join attempt to a cut-off host hangs.
	TCPTimeout time.Duration

	// DeadNodeReclaimTime is how long a member must have been dead before
	// a host under its name at another address may take its place. 0 would
	// mean never (memberlist's default), which leaves a host that comes
	// back at a new address out for good.
	DeadNodeReclaimTime time.Duration

	// ReconnectInterval is how often the reconnect loop runs. Each run
	// tries to join the addresses of members seen failed or left, and the
	// seeds that are not live members. Memberlist alone never does this:
	// two halves apart longer than the suspicion timeout forget each other
	// and never merge.
	ReconnectInterval time.Duration

	// ReconnectMaxBackoff caps the per-address backoff of the reconnect
	// loop, which doubles from ReconnectInterval after each try.
	ReconnectMaxBackoff time.Duration

	// ReconnectTimeout is how long a failed or left member is remembered:
	// it stays in Members (and is retried) for this long, then it is
	// reaped (EventReap).
	ReconnectTimeout time.Duration
}

// DefaultConfig returns settings for a LAN: memberlist's LAN timings (a
// killed host is declared failed after roughly 4-6 s at 3 hosts) plus our
// reconnect loop and address reclaim.
func DefaultConfig() Config {
	return Config{
		BindAddr:                "0.0.0.0",
		BindPort:                DefaultPort,
		ProbeInterval:           time.Second,
		ProbeTimeout:            500 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		GossipInterval:          200 * time.Millisecond,
		GossipToTheDeadTime:     30 * time.Second,
		PushPullInterval:        30 * time.Second,
		TCPTimeout:              10 * time.Second,
		DeadNodeReclaimTime:     10 * time.Second,
		ReconnectInterval:       10 * time.Second,
		ReconnectMaxBackoff:     2 * time.Minute,
		ReconnectTimeout:        24 * time.Hour,
	}
}

// DefaultTestConfig returns DefaultConfig with short timings for tests on
// one machine: failure detection within about 1-2 s, merge after a healed
// partition within a few seconds. It binds 127.0.0.1 on a free port.
func DefaultTestConfig() Config {
	c := DefaultConfig()
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 50 * time.Millisecond
	c.GossipToTheDeadTime = 2 * time.Second
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = time.Second
	c.DeadNodeReclaimTime = 200 * time.Millisecond
	c.ReconnectInterval = 250 * time.Millisecond
	c.ReconnectMaxBackoff = 2 * time.Second
	c.ReconnectTimeout = time.Minute
	return c
}

// ValidateConfig reports the first problem with c.
func ValidateConfig(c *Config) error {
	switch {
	case c.Name == "":
		return errors.New("membership: Name is empty")
	case c.Logger == nil:
		return errors.New("membership: Logger is nil")
	case net.ParseIP(c.BindAddr) == nil:
		return fmt.Errorf("membership: BindAddr %q is not an IP", c.BindAddr)
	case c.BindPort < 0 || c.BindPort > 65535:
		return fmt.Errorf("membership: BindPort %d out of range", c.BindPort)
	case c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil:
		return fmt.Errorf("membership: AdvertiseAddr %q is not an IP", c.AdvertiseAddr)
	case c.AdvertisePort < 0 || c.AdvertisePort > 65535:
		return fmt.Errorf("membership: AdvertisePort %d out of range", c.AdvertisePort)
	case c.EncryptKey != nil && len(c.EncryptKey) != 16 && len(c.EncryptKey) != 24 && len(c.EncryptKey) != 32:
		return fmt.Errorf("membership: EncryptKey is %d bytes, want 16, 24 or 32", len(c.EncryptKey))
	case c.EncryptKey == nil && len(c.Keys) > 0:
		return errors.New("membership: Keys without an EncryptKey")
	case c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.GossipInterval <= 0 || c.TCPTimeout <= 0:
		return errors.New("membership: ProbeInterval, ProbeTimeout, GossipInterval and TCPTimeout must be positive")
	case c.ProbeTimeout > c.ProbeInterval:
		return errors.New("membership: ProbeTimeout exceeds ProbeInterval")
	case c.SuspicionMult < 1 || c.SuspicionMaxTimeoutMult < 1:
		return errors.New("membership: SuspicionMult and SuspicionMaxTimeoutMult must be at least 1")
	case c.GossipToTheDeadTime < 0 || c.PushPullInterval < 0:
		return errors.New("membership: GossipToTheDeadTime and PushPullInterval must not be negative")
	case c.DeadNodeReclaimTime <= 0:
		return errors.New("membership: DeadNodeReclaimTime must be positive, or a host at a new address is never taken back")
	case c.ReconnectInterval <= 0 || c.ReconnectMaxBackoff < c.ReconnectInterval || c.ReconnectTimeout <= 0:
		return errors.New("membership: need 0 < ReconnectInterval <= ReconnectMaxBackoff and ReconnectTimeout > 0")
	}
	for _, j := range c.Join {
		if j == "" {
			return errors.New("membership: empty Join address")
		}
	}
	if err := c.Meta.Validate(); err != nil {
		return err
	}
	if _, err := encodeMeta(wireMeta{Meta: c.Meta, Leaving: true}); err != nil {
		return err
	}
	return nil
}

// ParseKey decodes a gossip key given as base64 (the agent's -encrypt) and
// checks its length.
func ParseKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("membership: encryption key is not base64: %w", err)
	}
	if len(k) != 16 && len(k) != 24 && len(k) != 32 {
		return nil, fmt.Errorf("membership: encryption key is %d bytes, want 16, 24 or 32", len(k))
	}
	return k, nil
}
