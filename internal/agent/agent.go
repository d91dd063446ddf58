// Package agent wires a shi host together: it builds every subsystem from
// a Config, owns their goroutines, serves the XenStore socket and the HTTP
// API. Only cmd/shi and test harnesses import it.
//
// Goroutines (see docs/agent.md): the XenStore accept loop and, per
// connection, a reader and a writer; the HTTP server; the domain reconcile
// loop (domain.Manager.Reconcile); in a cluster, the
// bootstrap loop, the leader loop (voters, dead hosts) and the membership
// event and metadata loops, besides memberlist's and Raft's own.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shi/api"
	"shi/internal/devices/console"
	"shi/internal/directory"
	"shi/internal/domain"
	"shi/internal/faultnet"
	"shi/internal/hypervisor"
	"shi/internal/membership"
	"shi/internal/tlsconf"
	"shi/internal/transport"
	"shi/internal/xenstore"
	"shi/internal/xenstore/server"
)

// Version is the agent's version, reported by the API and gossip.
const Version = "0.1.0"

// Info is what a started agent tells its caller.
type Info struct {
	XenstoreSocket string
	APIURL         string
}

// Main runs "shi agent" with command-line arguments and returns the exit
// code. It prints XENSTORED_PATH=... and SHI_AGENT=... on stdout once the
// agent serves, so that scripts can eval them.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shi agent: %v\n", err)
		return 2
	}
	cfg.OnBootstrapToken = func(secret string) {
		fmt.Fprintf(stdout, "%s=%s\n", api.EnvToken, secret)
	}
	err = Run(ctx, cfg, func(i Info) {
		fmt.Fprintf(stdout, "%s=%s\n%s=%s\n", api.EnvXenstore, i.XenstoreSocket, api.EnvAgent, i.APIURL)
		if f, ok := stdout.(*os.File); ok {
			f.Sync()
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "shi agent: %v\n", err)
		return 1
	}
	return 0
}

type agent struct {
	cfg     Config
	log     *slog.Logger
	start   time.Time
	replica *directory.Replica
	commit  directory.Committer
	xs      *server.Server
	hv      *hypervisor.Hypervisor
	domains *domain.Manager
	apiURL  string

	// consoles are the driver domain's console back ends, once it runs.
	consoles atomic.Pointer[console.Service]
	// exports are this host's disk exports (disks.go).
	exports exports
	// auth is the API authentication's state (auth.go).
	auth authState

	// tls is the agents' mutual TLS (nil: off).
	tls *tlsconf.Config

	// Cluster mode only.
	node    *directory.Node
	cluster *directory.Cluster
	members *membership.Membership
	mesh    *transport.Mesh
	faults  *faultnet.Faults
}

// Run runs an agent until ctx ends. ready is called once it serves.
func Run(ctx context.Context, cfg Config, ready func(Info)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &agent{cfg: cfg, log: log, start: time.Now(), replica: directory.NewReplica(cfg.Quota)}
	if cfg.TestFaults {
		a.faults = faultnet.New()
	}
	if err := a.loadTLS(); err != nil {
		return err
	}

	apil, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	defer apil.Close()
	a.apiURL = "http://" + apil.Addr().String()
	if a.faults != nil {
		apil = a.faults.Listener(apil) // forwarded changes see the test faults too
	}
	if a.tls != nil {
		a.apiURL = "https://" + strings.TrimPrefix(a.apiURL, "http://")
		apil = tls.NewListener(apil, a.tls.API())
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // first: the loops below end with ctx
		wg.Wait()
	}()
	// The hypervisor comes first: the data plane hands it what other
	// hosts send. Its peers are the mesh, once the cluster starts.
	hc := hypervisor.Config{Logger: log.With("sub", "hypervisor"), Host: cfg.Name, Locate: locator{a.replica, cfg.Name}}
	if !cfg.Dev {
		hc.Peers = meshPeers{a}
	}
	a.hv = hypervisor.New(hc)
	defer a.hv.Close() // after the domains are gone (defers run last-in first-out)
	if cfg.Dev {
		a.commit = directory.NewLocal(a.replica)
		if err := a.bootstrapStore(ctx); err != nil {
			return err
		}
		if err := a.syncQuota(ctx); err != nil {
			return err
		}
	} else {
		stop, err := a.startCluster(ctx, &wg)
		if err != nil {
			return err
		}
		defer stop()
	}

	xsl, err := listenUnix(cfg.XenstoreSocket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.XenstoreSocket)
	backend := &directory.Backend{R: a.replica, C: a.commit, Log: log, Commit: cfg.CommitTimeout}
	if cfg.ConsistentReads && a.cluster != nil {
		backend.ReadIndex = a.cluster.ReadIndex
	}
	a.domains, err = domain.NewManager(domain.ManagerConfig{
		Host: cfg.Name, Replica: a.replica, Committer: a.commit, Logger: log.With("sub", "domains"),
		XenstoreSocket: cfg.XenstoreSocket, APIURL: a.apiURL, XenLibs: cfg.XenLibs, Hosts: a.placementHosts,
		ConsoleHelper: cfg.ConsoleHelper,
		Output:        a.domainOutput, Hypervisor: a.hv,
	})
	if err != nil {
		return err
	}
	defer a.domains.Close() // kills this host's domains; runs before the cluster stops
	a.xs = server.New(server.Config{Backend: backend, Logger: log, Quota: cfg.Quota, Identify: a.domains.Identify})
	hs := &http.Server{Handler: a.withPeers(a.routes()), ReadHeaderTimeout: 10 * time.Second}
	if cfg.APISocket != "" {
		stopSocket, err := a.serveSocket(hs.Handler)
		if err != nil {
			return err
		}
		defer stopSocket()
	}

	errc := make(chan error, 2)
	wg.Add(5)
	go func() {
		defer wg.Done()
		a.startDriver(ctx) // this host's driver domain: the console and disk back ends
	}()
	go func() {
		defer wg.Done()
		a.syncExports(ctx)
	}()
	go func() {
		defer wg.Done()
		// Domains the directory says run here but died with an earlier
		// agent are crashed; their on_crash is followed.
		a.domains.Reconcile(ctx)
	}()
	go func() {
		defer wg.Done()
		errc <- a.xs.Serve(ctx, xsl)
	}()
	go func() {
		defer wg.Done()
		if err := hs.Serve(apil); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	log.Info("agent serving", "name", cfg.Name, "dev", cfg.Dev, "xenstore", cfg.XenstoreSocket, "api", a.apiURL, "api_socket", cfg.APISocket)
	if cfg.Dev {
		log.Warn("dev agent: the API takes no token; it listens on loopback only", "api", a.apiURL)
	}
	if ready != nil {
		ready(Info{XenstoreSocket: cfg.XenstoreSocket, APIURL: a.apiURL})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	log.Info("agent stopping")
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	hs.Shutdown(sctx)
	xsl.Close()
	return runErr
}

// bootstrapStore writes what a Xen toolstack writes for dom0, once per
// cluster: the keys go in one transaction that only applies while /tool
// does not exist.
func (a *agent) bootstrapStore(ctx context.Context) error {
	c := xenstore.CreateOnce("/tool",
		xenstore.Command{Op: xenstore.OpWrite, Path: "/local/domain/0/name", Value: []byte("Domain-0")},
		xenstore.Command{Op: xenstore.OpWrite, Path: "/local/domain/0/domid", Value: []byte("0")},
		xenstore.Command{Op: xenstore.OpMkdir, Path: "/vm"},
		xenstore.Command{Op: xenstore.OpMkdir, Path: "/tool"},
	)
	_, resp, err := a.commit.Commit(ctx, directory.XenstoreEntry(c))
	if err == nil && resp.Xs.Err != 0 && resp.Xs.Err != syscall.EAGAIN {
		err = resp.Xs.Err
	}
	if err != nil {
		return fmt.Errorf("xenstore bootstrap: %v", err)
	}
	return nil
}

// syncQuota makes the replicated XenStore quota match this agent's
// configuration (in a cluster the leader does it, so the leader's -quota
// wins).
func (a *agent) syncQuota(ctx context.Context) error {
	for name, v := range a.replica.State().Quota().Diff(a.cfg.Quota) {
		c := &xenstore.Command{Op: xenstore.OpSetQuota, Path: name, Value: []byte(strconv.Itoa(v))}
		_, resp, err := a.commit.Commit(ctx, directory.XenstoreEntry(c))
		if err == nil && resp.Xs.Err != 0 {
			err = resp.Xs.Err
		}
		if err != nil {
			return fmt.Errorf("quota %s: %v", name, err)
		}
	}
	return nil
}

// listenUnix listens on a Unix socket path, replacing a stale socket left
// by an agent that died, but refusing to steal one that still answers.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("xenstore socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("xenstore socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("xenstore socket: another agent is serving %s", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("xenstore socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	// Anyone may connect: who a client is (domain 0, a domain, or refused)
	// comes from its credentials (domain.Manager.Identify), not from the
	// socket's mode, and domains run under uids of their own.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
