package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"shi/internal/bench"
)

func init() {
	register("benchtcp", "(internal) the TCP baselines and the summary of scripts/bench-remote.sh", runBenchTCP)
}

const benchTCPUsage = `usage: shi benchtcp serve -listen IP:PORT [-tls-listen IP:PORT -tls-ca F -tls-cert F -tls-key F]
       shi benchtcp ping -addr IP:PORT [-rounds N] [-runs N] [-size BYTES] [-delay-ms MS]
       shi benchtcp stream -addr IP:PORT [-mib N] [-chunk KIB] [-runs N] [-delay-ms MS] [-tls-ca F -tls-cert F -tls-key F]
       shi benchtcp summary [-headline PHASE] [LOG...]
       shi benchtcp pty -listen IP:PORT     (shi bench console's baseline)

The TCP baselines that scripts/bench-remote.sh sets shi's cross-host
benchmarks against, between two test hosts: serve on one, ping or stream
from the other. ping and stream end with a figure line (NAME = MEDIAN
UNIT (runs: ...)); summary reads the script's log (stdin without LOG)
and prints the medians, spreads and ratios.`

// runBenchTCP is "shi benchtcp".
func runBenchTCP(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, benchTCPUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = benchTCPServe(ctx, env, args[1:])
	case "ping":
		err = benchTCPPing(env, args[1:])
	case "stream":
		err = benchTCPStream(env, args[1:])
	case "summary":
		err = benchTCPSummary(env, args[1:])
	case "pty":
		err = benchTCPPTY(ctx, env, args[1:])
	case "-h", "-help", "--help":
		fmt.Fprintln(env.Stderr, benchTCPUsage)
		return 0
	default:
		env.Errorf("benchtcp: unknown subcommand %q", args[0])
		fmt.Fprintln(env.Stderr, benchTCPUsage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		env.Errorf("benchtcp %s: %v", args[0], err)
		return 1
	}
	return 0
}

// benchTCPServe serves until ctx ends (SIGINT, SIGTERM).
func benchTCPServe(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("shi benchtcp serve", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	listen := fs.String("listen", "", "IP:PORT to listen on (port 0: any)")
	tlsListen := fs.String("tls-listen", "", "IP:PORT of the TLS stream baseline too (with -tls-ca, -tls-cert, -tls-key)")
	tf := addTLSFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" {
		return errors.New("-listen IP:PORT is required")
	}
	if *tlsListen != "" {
		ts, err := tlsBaselineServer(*tlsListen, tf)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "benchtcp tls listening on %s\n", ts.Addr())
		go ts.Serve(env.Stderr)
		defer ts.Close()
	}
	s, err := bench.ListenTCP(*listen)
	if err != nil {
		return err
	}
	// The script waits for this line before it starts a client.
	fmt.Fprintf(env.Stdout, "benchtcp listening on %s\n", s.Addr())
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	return s.Serve(env.Stderr)
}

// delayFlag adds -delay-ms.
func delayFlag(fs *flag.FlagSet) *float64 {
	return fs.Float64("delay-ms", 0, "one-way delay both ends add to what they send (internal/faultnet), ms")
}

func millis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func benchTCPPing(env *Env, args []string) error {
	fs := flag.NewFlagSet("shi benchtcp ping", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	addr := fs.String("addr", "", "the server's IP:PORT")
	rounds := fs.Int("rounds", 10000, "round trips per run")
	runs := fs.Int("runs", 11, "runs (the median is reported)")
	size := fs.Int("size", 16, "bytes of each message (16: a link's event frame)")
	delay := delayFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("-addr IP:PORT is required")
	}
	rt, err := bench.TCPPingPong(*addr, *size, *rounds, *runs, millis(*delay))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "TCP ping-pong of %d-byte messages with %s, TCP_NODELAY, %s (%d runs of %d)\n",
		*size, *addr, tcpMode(*delay), *runs, *rounds)
	fmt.Fprintln(env.Stdout, bench.MicrosFigure(bench.FigTCPRoundTrip, rt).Line())
	return nil
}

func benchTCPStream(env *Env, args []string) error {
	fs := flag.NewFlagSet("shi benchtcp stream", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	addr := fs.String("addr", "", "the server's IP:PORT")
	mib := fs.Int64("mib", 1024, "MiB streamed per run")
	chunk := fs.Int("chunk", 64, "KiB per write (the ring producer's)")
	runs := fs.Int("runs", 5, "runs (the median is reported)")
	delay := delayFlag(fs)
	tf := addTLSFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("-addr IP:PORT is required")
	}
	if *tf.ca != "" {
		return tlsBaselineStream(env, *addr, tf, *mib, *chunk, *runs)
	}
	bps, err := bench.TCPStream(*addr, *mib<<20, *chunk<<10, *runs, millis(*delay))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "TCP stream of %d MiB in %d KiB writes to %s, TCP_NODELAY, %s (%d runs)\n",
		*mib, *chunk, *addr, tcpMode(*delay), *runs)
	fmt.Fprintln(env.Stdout, bench.GBFigure(bench.FigTCPStream, bps).Line())
	return nil
}

// tcpMode says how the baseline's ends use their sockets.
func tcpMode(delayMs float64) string {
	if delayMs <= 0 {
		return "raw system calls"
	}
	return fmt.Sprintf("%g ms added to each write by internal/faultnet, in Go's netpoller", delayMs)
}

func benchTCPSummary(env *Env, args []string) error {
	fs := flag.NewFlagSet("shi benchtcp summary", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	headline := fs.String("headline", "no delay", "the phase whose ratios print last, with their goals")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var r io.Reader = env.Stdin
	if fs.NArg() > 0 {
		var rs []io.Reader
		for _, name := range fs.Args() {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			rs = append(rs, f)
		}
		r = io.MultiReader(rs...)
	}
	return bench.Summarize(r, env.Stdout, *headline)
}
