package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shi/guest/xs"
)

// OxenstoredAnchor is the published figure the XenStore benchmark is read
// against: oxenstored took 3.8 s for 300 parallel domain starts and
// shutdowns after its replay-on-conflict fix (268.9 s before). Neither
// reference daemon runs without a hypervisor, so it cannot be measured here.
const OxenstoredAnchor = 3800 * time.Millisecond

// XenstoreConfig sets the toolstack workload.
type XenstoreConfig struct {
	Socket  string // XenStore socket of the agent under test
	Domains int    // domains started and shut down (300)
	Base    int    // first domid used (kept clear of real domains)
}

// XenstoreResult is one phase's figures.
type XenstoreResult struct {
	Wall      time.Duration
	Commits   int64 // transactions committed
	Conflicts int64 // commits refused with EAGAIN (then retried)
	Requests  int64 // wire requests sent
	Latencies []time.Duration
}

// Rate is requests per second.
func (r XenstoreResult) Rate() float64 { return float64(r.Requests) / r.Wall.Seconds() }

// ConflictRate is conflicts per commit attempt.
func (r XenstoreResult) ConflictRate() float64 {
	if r.Commits+r.Conflicts == 0 {
		return 0
	}
	return float64(r.Conflicts) / float64(r.Commits+r.Conflicts)
}

// domainKeys are the nodes a Xen toolstack (libxl) writes for a new PV
// domain under its home, besides the home's permissions.
var domainKeys = []string{
	"name", "domid", "vm", "control/shutdown", "control/platform-feature-multiprocessor-suspend",
	"memory/static-max", "memory/target", "memory/videoram", "cpu/0/availability",
	"store/port", "store/ring-ref", "console/port", "console/ring-ref", "console/type", "console/limit",
}

func uuid(dom int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", dom) }

// startDomain writes one domain's keys in one transaction, retrying on
// conflict, as "xl create" does.
func startDomain(c *xs.Client, dom int, r *XenstoreResult) error {
	home := "/local/domain/" + strconv.Itoa(dom)
	vm := "/vm/" + uuid(dom)
	return commitRetry(c, r, func(t *xs.Tx) error {
		if err := t.Mkdir(home); err != nil {
			return err
		}
		if err := t.SetPerms(home, xs.Perm{Domid: 0}, xs.Perm{Domid: uint32(dom), Access: xs.AccessRead}); err != nil {
			return err
		}
		for _, k := range domainKeys {
			v := k
			if k == "domid" {
				v = strconv.Itoa(dom)
			}
			if err := t.Write(home+"/"+k, []byte(v)); err != nil {
				return err
			}
		}
		for _, k := range []string{"name", "uuid", "start_time"} {
			if err := t.Write(vm+"/"+k, []byte(k)); err != nil {
				return err
			}
		}
		r.Requests += int64(2 + len(domainKeys) + 3)
		return nil
	})
}

// stopDomain removes the domain's nodes in one transaction.
func stopDomain(c *xs.Client, dom int, r *XenstoreResult) error {
	return commitRetry(c, r, func(t *xs.Tx) error {
		r.Requests += 2
		if err := t.Rm("/local/domain/" + strconv.Itoa(dom)); err != nil {
			return err
		}
		return t.Rm("/vm/" + uuid(dom))
	})
}

func commitRetry(c *xs.Client, r *XenstoreResult, fn func(*xs.Tx) error) error {
	for {
		t0 := time.Now()
		t, err := c.TransactionStart()
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			t.Abort()
			return err
		}
		err = t.Commit()
		r.Requests += 2
		if errors.Is(err, syscall.EAGAIN) {
			r.Conflicts++
			continue
		}
		if err != nil {
			return err
		}
		r.Commits++
		r.Latencies = append(r.Latencies, time.Since(t0))
		return nil
	}
}

// XenstoreSequential starts then stops cfg.Domains domains from one client.
func XenstoreSequential(ctx context.Context, cfg XenstoreConfig) (XenstoreResult, error) {
	var r XenstoreResult
	c, err := xs.Open(cfg.Socket)
	if err != nil {
		return r, err
	}
	defer c.Close()
	t0 := time.Now()
	for i := 0; i < cfg.Domains && ctx.Err() == nil; i++ {
		if err := startDomain(c, cfg.Base+i, &r); err != nil {
			return r, fmt.Errorf("start domain %d: %w", cfg.Base+i, err)
		}
	}
	for i := 0; i < cfg.Domains && ctx.Err() == nil; i++ {
		if err := stopDomain(c, cfg.Base+i, &r); err != nil {
			return r, fmt.Errorf("stop domain %d: %w", cfg.Base+i, err)
		}
	}
	r.Wall = time.Since(t0)
	return r, ctx.Err()
}

// XenstoreParallel runs cfg.Domains clients at once, each on its own
// connection, each starting and then stopping one domain.
func XenstoreParallel(ctx context.Context, cfg XenstoreConfig) (XenstoreResult, error) {
	var total XenstoreResult
	clients := make([]*xs.Client, cfg.Domains)
	for i := range clients {
		c, err := xs.Open(cfg.Socket)
		if err != nil {
			for _, o := range clients[:i] {
				o.Close()
			}
			return total, err
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		gate     = make(chan struct{})
		failed   atomic.Bool
	)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r XenstoreResult
			<-gate
			dom := cfg.Base + i
			err := startDomain(c, dom, &r)
			if err == nil {
				err = stopDomain(c, dom, &r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && !failed.Swap(true) {
				firstErr = fmt.Errorf("domain %d: %w", dom, err)
			}
			total.Commits += r.Commits
			total.Conflicts += r.Conflicts
			total.Requests += r.Requests
			total.Latencies = append(total.Latencies, r.Latencies...)
		}()
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	total.Wall = time.Since(t0)
	return total, firstErr
}

// RunXenstore runs both phases and prints the table; the last line is the
// headline ratio against the oxenstored anchor.
func RunXenstore(ctx context.Context, cfg XenstoreConfig, w io.Writer) error {
	seq, err := XenstoreSequential(ctx, cfg)
	if err != nil {
		return fmt.Errorf("sequential: %w", err)
	}
	par, err := XenstoreParallel(ctx, cfg)
	if err != nil {
		return fmt.Errorf("parallel: %w", err)
	}
	t := &Table{W: w}
	t.Row("phase", "domains", "wall", "requests/s", "tx p50", "tx p99", "conflicts")
	for _, x := range []struct {
		name string
		r    XenstoreResult
	}{{"sequential", seq}, {"parallel", par}} {
		t.Row(x.name, strconv.Itoa(cfg.Domains), Secs(x.r.Wall), fmt.Sprintf("%.0f", x.r.Rate()),
			Percentile(x.r.Latencies, 50).Round(time.Microsecond).String(),
			Percentile(x.r.Latencies, 99).Round(time.Microsecond).String(),
			fmt.Sprintf("%d (%.1f%%)", x.r.Conflicts, 100*x.r.ConflictRate()))
	}
	t.Flush()
	fmt.Fprintf(w, "anchor: oxenstored, 300 parallel starts+shutdowns, %s (published; not runnable without a hypervisor)\n", Secs(OxenstoredAnchor))
	fmt.Fprintf(w, "xenstore parallel wall / oxenstored anchor = %.3f\n", par.Wall.Seconds()/OxenstoredAnchor.Seconds())
	return nil
}
