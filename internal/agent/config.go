package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"shi/api"
	"shi/internal/membership"
	"shi/internal/xenstore"
)

// Config is everything an agent needs; tests build it directly, the
// command line fills it from flags.
type Config struct {
	// Name of this host in the cluster (default: the hostname).
	Name string
	// Dev runs a one-host cluster with all state in memory.
	Dev bool
	// XenstoreSocket is the path of the XenStore socket (XENSTORED_PATH).
	XenstoreSocket string
	// APIAddr is the HTTP API's listen address; port 0 picks a free port.
	// In a cluster it must be reachable by the other hosts.
	APIAddr string
	// Quota is the XenStore quota (C xenstored's defaults).
	Quota xenstore.Quota
	// XenLibs is the directory of the replacement libxenevtchn.so.1 and
	// libxengnttab.so.1 (scripts/build-libxen.sh) that domains with
	// xen_libs = 1 run with; "" refuses such domains.
	XenLibs string
	// ConsoleHelper is the shi binary that runs a domain's program on a
	// terminal joined to its console ("shi console-helper"); "shi agent"
	// sets it to itself. "": programs run without a terminal.
	ConsoleHelper string
	// Logger receives the agent's logs.
	Logger *slog.Logger
	// APISocket is the path of the local API socket, served without a
	// token to root and the agent's user ("": none).
	APISocket string
	// APIToken is a management token's secret (-api-token-file's): the
	// first leader bootstraps the cluster's tokens with it, and every
	// agent given it adds it if missing. "": the first leader makes one
	// and prints it once.
	APIToken string
	// OnBootstrapToken, if set, is told the management token this agent
	// made when it bootstrapped the cluster's tokens.
	OnBootstrapToken func(secret string)

	// Cluster mode (not Dev).

	// DataDir keeps the directory's Raft log and snapshots.
	DataDir string
	// BindIP is this host's address for gossip, Raft and the API.
	BindIP string
	// GossipPort, RaftPort and DataPort are the membership, Raft and
	// data-plane ports (the data plane carries event channels, grants
	// and the links between domains of different hosts).
	GossipPort, RaftPort, DataPort int
	// Join lists hosts (IP or IP:PORT of their gossip) to join at start.
	Join []string
	// BootstrapExpect is the number of voters (1, 3 or 5): the first
	// hosts up to it bootstrap the directory; later hosts are non-voters.
	BootstrapExpect int
	// EncryptKey turns on gossip encryption (16, 24 or 32 bytes).
	EncryptKey []byte
	// TLSCA, TLSCert and TLSKey are PEM files ("shi tls"): the cluster
	// CA, this host's certificate and its key. Set, they turn on mutual
	// TLS between agents and HTTPS for the API; plaintext is refused.
	TLSCA, TLSCert, TLSKey string
	// ConsistentReads makes XenStore reads linearizable (a read index
	// from the leader per read) instead of served from the local replica.
	ConsistentReads bool
	// VoterGrace is how long a voter may be dead before a live non-voter
	// replaces it.
	VoterGrace time.Duration
	// CommitTimeout bounds how long a change waits for a quorum before the
	// client gets EROFS.
	CommitTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a directory
	// snapshot (0: Raft's default, 8192).
	SnapshotThreshold uint64
	// TestFaults enables the fault hook on the agent's transports and its
	// API (/v1/internal/faults). Tests only.
	TestFaults bool
	// TestTiming shortens failure detection and elections. Tests only.
	TestTiming bool
}

// Default ports of a cluster agent.
const (
	DefaultAPIPort  = 7070
	DefaultRaftPort = 7947
	DefaultDataPort = 7948
)

// DefaultConfig returns the defaults of "shi agent".
func DefaultConfig() Config {
	host, _ := os.Hostname()
	sock := api.DefaultXenstoreSocket
	if os.Geteuid() != 0 {
		// /run/shi is root's; a user's agent serves under its own temp dir
		// (clients find it through the agent or XENSTORED_PATH).
		sock = filepath.Join(os.TempDir(), fmt.Sprintf("shi-%d", os.Geteuid()), "xenstored.sock")
	}
	return Config{
		Name:           host,
		XenstoreSocket: sock,
		Quota:          xenstore.DefaultQuota(),
		GossipPort:     membership.DefaultPort,
		RaftPort:       DefaultRaftPort,
		DataPort:       DefaultDataPort,
		VoterGrace:     30 * time.Second,
		CommitTimeout:  5 * time.Second,
	}
}

// Validate checks a configuration before anything starts, and fills in
// what follows from other fields.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("-name must not be empty"))
	}
	if c.XenstoreSocket == "" {
		errs = append(errs, errors.New("-xenstore-socket must not be empty"))
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 5 * time.Second
	}
	if c.XenLibs != "" {
		// Domains start elsewhere than the agent: the path must not be
		// relative.
		if abs, err := filepath.Abs(c.XenLibs); err != nil {
			errs = append(errs, fmt.Errorf("-xen-libs: %v", err))
		} else {
			c.XenLibs = abs
		}
		if _, err := os.Stat(filepath.Join(c.XenLibs, "libxenevtchn.so.1")); err != nil {
			errs = append(errs, fmt.Errorf("-xen-libs: %v (scripts/build-libxen.sh %s builds the libraries)", err, c.XenLibs))
		}
	}
	if c.Dev {
		if c.APIAddr == "" {
			c.APIAddr = api.DefaultAddr
		}
		// No tokens: only this host may reach the API.
		if h, _, err := net.SplitHostPort(c.APIAddr); err != nil || !net.ParseIP(h).IsLoopback() {
			errs = append(errs, fmt.Errorf("-dev serves its API without tokens, so only on a loopback address, not %q", c.APIAddr))
		}
		return errors.Join(errs...)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is required (or run a one-host cluster with -dev)"))
	}
	if net.ParseIP(c.BindIP) == nil || net.ParseIP(c.BindIP).IsUnspecified() {
		errs = append(errs, fmt.Errorf("-bind must be this host's IP address, not %q", c.BindIP))
	}
	switch c.BootstrapExpect {
	case 1, 3, 5:
	default:
		errs = append(errs, fmt.Errorf("-bootstrap-expect must be 1, 3 or 5, not %d", c.BootstrapExpect))
	}
	if c.APIAddr == "" && c.BindIP != "" {
		c.APIAddr = net.JoinHostPort(c.BindIP, fmt.Sprint(DefaultAPIPort))
	}
	if c.VoterGrace <= 0 {
		errs = append(errs, errors.New("-voter-grace must be positive"))
	}
	if set := btoi(c.TLSCA != "") + btoi(c.TLSCert != "") + btoi(c.TLSKey != ""); set != 0 && set != 3 {
		errs = append(errs, errors.New("-tls-ca, -tls-cert and -tls-key go together"))
	}
	return errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseFlags fills a Config from the command line.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("shi agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&cfg.Dev, "dev", false, "run a one-host cluster with its state in memory, for trying things")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "this host's name in the cluster")
	fs.StringVar(&cfg.XenstoreSocket, "xenstore-socket", cfg.XenstoreSocket, "path of the XenStore socket")
	fs.StringVar(&cfg.XenLibs, "xen-libs", "", "directory of shi's libxenevtchn.so.1/libxengnttab.so.1 (scripts/build-libxen.sh DIR) for domains with xen_libs = 1")
	fs.StringVar(&cfg.APIAddr, "api", "", "HTTP API address IP:PORT (default 127.0.0.1:7070 with -dev, else BIND:7070; port 0 picks a free one)")
	fs.StringVar(&cfg.APISocket, "api-socket", "", "local API socket, for root on this host without a token (default "+api.DefaultAPISocket+", or NAME.api.sock beside another -xenstore-socket NAME.sock; \"none\": no socket)")
	tokenFile := fs.String("api-token-file", "", "file with the management token the cluster's tokens are bootstrapped with (created with a new token if missing); without it the first leader prints one")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log and snapshots")
	fs.StringVar(&cfg.BindIP, "bind", "", "this host's IP address for gossip, Raft and the API")
	if exe, err := os.Executable(); err == nil {
		cfg.ConsoleHelper = exe
	}
	join := fs.String("join", "", "comma-separated hosts to join (IP or IP:PORT)")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 3, "number of voting hosts: 1, 3 or 5")
	encrypt := fs.String("encrypt", "", "cluster key, base64 of 16, 24 or 32 bytes: encrypts gossip, authenticates forwarded changes and data-plane connections")
	fs.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "gossip port (UDP and TCP)")
	fs.StringVar(&cfg.TLSCA, "tls-ca", "", "cluster CA certificate (shi tls ca create): with -tls-cert and -tls-key, mutual TLS between agents and HTTPS for the API")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "this host's certificate (shi tls cert create -node NAME -ip IP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "this host's certificate's key")
	fs.IntVar(&cfg.RaftPort, "raft-port", cfg.RaftPort, "Raft port")
	fs.IntVar(&cfg.DataPort, "data-port", cfg.DataPort, "data-plane port (event channels, grants and links between hosts)")
	fs.BoolVar(&cfg.ConsistentReads, "consistent-reads", false, "linearizable XenStore reads (one round trip to the leader each)")
	fs.DurationVar(&cfg.VoterGrace, "voter-grace", cfg.VoterGrace, "how long a dead voter is kept before a live host replaces it")
	fs.DurationVar(&cfg.CommitTimeout, "commit-timeout", cfg.CommitTimeout, "how long a change waits for a quorum before failing with EROFS")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 0, "log entries between directory snapshots (0: 8192)")
	fs.BoolVar(&cfg.TestFaults, "test-faults", false, "tests only: enable the transport fault hook and /v1/internal/faults")
	fs.BoolVar(&cfg.TestTiming, "test-timing", false, "tests only: fast failure detection and elections")
	quota := fs.String("quota", "", "XenStore quota changes, name=value,... ("+strings.Join(cfg.Quota.Names(), ", ")+"); C xenstored's defaults otherwise")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: shi agent -dev [flags]\n       shi agent -name N -data-dir D -bind IP -join IP[,IP] -bootstrap-expect 3 [flags]\n\nRuns the per-host agent. Flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for _, j := range strings.Split(*join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	if *encrypt != "" {
		k, err := membership.ParseKey(*encrypt)
		if err != nil {
			return cfg, fmt.Errorf("-encrypt: %v", err)
		}
		cfg.EncryptKey = k
	}
	switch cfg.APISocket {
	case "":
		cfg.APISocket = api.SocketBeside(cfg.XenstoreSocket)
	case "none":
		cfg.APISocket = ""
	}
	if *tokenFile != "" {
		t, err := readTokenFile(*tokenFile)
		if err != nil {
			return cfg, fmt.Errorf("-api-token-file: %v", err)
		}
		cfg.APIToken = t
	}
	if err := xenstore.ParseQuota(&cfg.Quota, *quota); err != nil {
		return cfg, fmt.Errorf("-quota: %v", err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("-log-level: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, cfg.Validate()
}
