package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"shi/api"
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
	APIAddr string
	// Quota is the XenStore quota (C xenstored's defaults).
	Quota xenstore.Quota
	// Logger receives the agent's logs.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of "shi agent".
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:           host,
		XenstoreSocket: api.DefaultXenstoreSocket,
		APIAddr:        api.DefaultAddr,
		Quota:          xenstore.DefaultQuota(),
	}
}

// Validate checks a configuration before anything starts.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("-name must not be empty"))
	}
	if !c.Dev {
		errs = append(errs, errors.New("only -dev (a one-host cluster in memory) is implemented so far"))
	}
	if c.XenstoreSocket == "" {
		errs = append(errs, errors.New("-xenstore-socket must not be empty"))
	}
	if c.APIAddr == "" {
		errs = append(errs, errors.New("-api must not be empty"))
	}
	return errors.Join(errs...)
}

// parseFlags fills a Config from the command line.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("shi agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&cfg.Dev, "dev", false, "run a one-host cluster with its state in memory, for trying things")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "this host's name in the cluster")
	fs.StringVar(&cfg.XenstoreSocket, "xenstore-socket", cfg.XenstoreSocket, "path of the XenStore socket")
	fs.StringVar(&cfg.APIAddr, "api", cfg.APIAddr, "HTTP API address (IP:PORT; port 0 picks a free one)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: shi agent -dev [flags]\n\nRuns the per-host agent. Flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("-log-level: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, cfg.Validate()
}
