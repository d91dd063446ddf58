package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"shi/guest/xs"
)

// opTimeout bounds one XenStore request in tests: longer than any commit
// timeout the tests use, so a timeout means a hung agent.
const opTimeout = 15 * time.Second

// eventually fails the test unless cond returns nil within d; the error
// of its last try is reported.
func eventually(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last error
	if Poll(ctx, 20*time.Millisecond, func() bool { last = cond(); return last == nil }) != nil {
		t.Fatalf("%s: not within %v: %v", what, d, last)
	}
}

// readIs checks that path reads want through x.
func readIs(x *xs.Client, path, want string) error {
	v, err := x.Read(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if string(v) != want {
		return fmt.Errorf("read %s = %q, want %q", path, v, want)
	}
	return nil
}

// ack is one write a writer sent and what became of it.
type ack struct {
	path, value string
	start, end  time.Time
	err         error // nil: acknowledged
}

// writer writes unique keys under a prefix through one host's agent, one
// at a time, until stopped, and records every outcome.
type writer struct {
	h      *Host
	prefix string
	stop   chan struct{}
	done   chan struct{}

	// mu guards log.
	mu  sync.Mutex
	log []ack
}

func startWriter(h *Host, prefix string) *writer {
	w := &writer{h: h, prefix: prefix, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	var x *xs.Client
	defer func() {
		if x != nil {
			x.Close()
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		if x == nil {
			var err error
			if x, err = xs.Open(w.h.Socket); err != nil {
				// The agent is down: wait for it (or the end).
				select {
				case <-w.stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
		}
		a := ack{path: fmt.Sprintf("%s/%d", w.prefix, n), value: fmt.Sprint(n), start: time.Now()}
		a.err = Within(x, opTimeout, func() error { return x.Write(a.path, []byte(a.value)) })
		a.end = time.Now()
		w.mu.Lock()
		w.log = append(w.log, a)
		w.mu.Unlock()
		if a.err != nil && !isErrno(a.err) {
			x.Close() // broken or timed out: reconnect
			x = nil
		}
		if a.err != nil {
			// Do not spin on a host that refuses writes.
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func isErrno(err error) bool {
	var e syscall.Errno
	return errors.As(err, &e)
}

// Stop stops the writer and returns its log.
func (w *writer) Stop() []ack {
	close(w.stop)
	<-w.done
	return w.Log()
}

// Log returns the outcomes so far.
func (w *writer) Log() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.log...)
}

// firstAckAfter returns when the first write that started after t was
// acknowledged.
func firstAckAfter(log []ack, t time.Time) (time.Time, bool) {
	for _, a := range log {
		if a.err == nil && !a.start.Before(t) {
			return a.end, true
		}
	}
	return time.Time{}, false
}

// firstErrAfter returns the first write that started after t and failed.
func firstErrAfter(log []ack, t time.Time) (ack, bool) {
	for _, a := range log {
		if a.err != nil && !a.start.Before(t) {
			return a, true
		}
	}
	return ack{}, false
}

func acked(log []ack) map[string]string {
	m := map[string]string{}
	for _, a := range log {
		if a.err == nil {
			m[a.path] = a.value
		}
	}
	return m
}

// checkAcked fails unless every acknowledged write reads back on every
// host in hosts (polling: local reads may trail the leader a little).
func checkAcked(t testing.TB, c *Cluster, hosts []int, want map[string]string) {
	t.Helper()
	for _, i := range hosts {
		h := c.Host(i)
		eventually(t, 15*time.Second, fmt.Sprintf("%d acknowledged writes on %s", len(want), h.Name), func() error {
			d, err := dumpHost(h, "/")
			if err != nil {
				return err
			}
			return missing(d, want)
		})
	}
}

// missing describes the writes of want that d lacks.
func missing(d map[string]Node, want map[string]string) error {
	var miss []string
	for p, v := range want {
		if n, ok := d[p]; !ok || n.Value != v {
			miss = append(miss, fmt.Sprintf("%s = %q (have %q)", p, v, n.Value))
		}
	}
	if len(miss) > 0 {
		slices.Sort(miss)
		return fmt.Errorf("%d of %d missing, e.g. %s", len(miss), len(want), miss[0])
	}
	return nil
}

// dumpHost dumps the tree under root through a new connection to the host.
func dumpHost(h *Host, root string) (map[string]Node, error) {
	x, err := xs.Open(h.Socket)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	var d map[string]Node
	err = Within(x, opTimeout, func() error {
		var err error
		d, err = Dump(x, root)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return d, nil
}

// sameTree waits until every host in hosts has the same tree and returns
// it.
func sameTree(t testing.TB, c *Cluster, hosts []int) map[string]Node {
	t.Helper()
	var first map[string]Node
	eventually(t, 15*time.Second, fmt.Sprintf("the same tree on hosts %v", hosts), func() error {
		first = nil
		for _, i := range hosts {
			d, err := dumpHost(c.Host(i), "/")
			if err != nil {
				return err
			}
			if first == nil {
				first = d
				continue
			}
			if diff := DiffDumps(first, d); diff != "" {
				if len(diff) > 2000 {
					diff = diff[:2000] + "…"
				}
				return fmt.Errorf("%s differs from %s:\n%s", c.Host(i).Name, c.Host(hosts[0]).Name, diff)
			}
		}
		return nil
	})
	return first
}

// others returns the indexes 0..n-1 without the given ones.
func others(n int, not ...int) []int {
	var out []int
	for i := range n {
		skip := false
		for _, x := range not {
			skip = skip || x == i
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}
