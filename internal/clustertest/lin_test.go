package clustertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"shi/guest/xs"
)

// The histories are single-key operations on a few keys, checked against a
// register per key (porcupine partitions the history by key).
const linKeys = 3

type linKind uint8

const (
	linRead  linKind = iota // XS_READ outside a transaction
	linWrite                // XS_WRITE outside a transaction
	linRMW                  // a transaction: read the key, write a new value, commit
)

// linInput is an operation as called. Every written value is unique.
type linInput struct {
	Kind  linKind
	Key   string
	Value string // written by linWrite and linRMW
}

// linOutput is what came back. Unknown marks a change whose outcome is not
// known (EIO, EROFS, a timeout, a closed connection): it may or may not
// have applied, so it gets an infinite return time and may take effect at
// any point after its call, or never. Reads and transactions that failed
// for sure (EAGAIN) change nothing and are left out of the history.
type linOutput struct {
	Unknown bool
	Found   bool   // linRead, linRMW: the key existed
	Value   string // linRead, linRMW: the value read
}

// absent is the register's state before the key is first written.
const absent = "\x00absent"

var linModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(linInput).Key
			if by[k] == nil {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return absent },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(linInput), output.(linOutput)
		read := absent
		if out.Found {
			read = out.Value
		}
		switch in.Kind {
		case linRead:
			return s == read, s
		case linWrite:
			return true, in.Value
		default: // linRMW
			if out.Unknown {
				return true, in.Value
			}
			return s == read, in.Value
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		v := "ENOENT"
		if out.Found {
			v = fmt.Sprintf("%q", out.Value)
		}
		switch {
		case in.Kind == linRead:
			return fmt.Sprintf("read %s -> %s", in.Key, v)
		case in.Kind == linWrite && out.Unknown:
			return fmt.Sprintf("write %s %q -> ?", in.Key, in.Value)
		case in.Kind == linWrite:
			return fmt.Sprintf("write %s %q", in.Key, in.Value)
		case out.Unknown:
			return fmt.Sprintf("rmw %s -> %q ?", in.Key, in.Value)
		}
		return fmt.Sprintf("rmw %s %s -> %q", in.Key, v, in.Value)
	},
	DescribeState: func(state any) string {
		if state.(string) == absent {
			return "absent"
		}
		return fmt.Sprintf("%q", state)
	},
}

// history records operations from several clients.
type history struct {
	base time.Time

	// mu guards ops and the counters.
	mu                     sync.Mutex
	ops                    []porcupine.Operation
	failed, unknown, total int
}

func (h *history) now() int64 { return int64(time.Since(h.base)) }

func (h *history) add(client int, in linInput, call int64, out linOutput, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total++
	if out.Unknown {
		h.unknown++
		ret = math.MaxInt64
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

func (h *history) fail() {
	h.mu.Lock()
	h.failed++
	h.total++
	h.mu.Unlock()
}

// linClient runs random operations through the agents until stop closes,
// starting on host first and moving on when its agent is down.
func linClient(c *Cluster, h *history, id, first int, prefix string, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	host := first
	var x *xs.Client
	defer func() {
		if x != nil {
			x.Close()
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		if x == nil {
			var err error
			if x, err = xs.Open(c.Host(host).Socket); err != nil {
				host = (host + 1) % len(c.Hosts())
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
		}
		in := linInput{Key: fmt.Sprintf("%s/k%d", prefix, rng.IntN(linKeys)), Value: fmt.Sprintf("c%d-%d", id, n)}
		switch r := rng.IntN(100); {
		case r < 45:
			in.Kind = linRead
		case r < 75:
			in.Kind = linWrite
		default:
			in.Kind = linRMW
		}
		call := h.now()
		var out linOutput
		var failed bool
		err := Within(x, 10*time.Second, func() error {
			out, failed = linDo(x, in)
			return nil
		})
		if err != nil { // timed out: x is closed
			out, failed = linOutput{Unknown: true}, in.Kind == linRead
		}
		ret := h.now()
		if failed {
			h.fail()
		} else {
			h.add(id, in, call, out, ret)
		}
		if err != nil || x.Err() != nil {
			x.Close()
			x = nil
		}
		// Leave some room, so that histories stay small enough to check.
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
	}
}

// linDo runs one operation. failed means it certainly had no effect (a
// read that failed, a transaction that conflicted or never committed).
func linDo(x *xs.Client, in linInput) (out linOutput, failed bool) {
	readOut := func(v []byte, err error) (linOutput, bool) {
		switch {
		case err == nil:
			return linOutput{Found: true, Value: string(v)}, true
		case errors.Is(err, syscall.ENOENT):
			return linOutput{}, true
		}
		return linOutput{}, false
	}
	switch in.Kind {
	case linRead:
		o, ok := readOut(x.Read(in.Key))
		return o, !ok
	case linWrite:
		if err := x.Write(in.Key, []byte(in.Value)); err != nil {
			return linOutput{Unknown: true}, false
		}
		return linOutput{}, false
	}
	t, err := x.TransactionStart()
	if err != nil {
		return linOutput{}, true
	}
	o, ok := readOut(t.Read(in.Key))
	if !ok {
		t.Abort()
		return linOutput{}, true
	}
	if err := t.Write(in.Key, []byte(in.Value)); err != nil {
		t.Abort()
		return linOutput{}, true
	}
	switch err := t.Commit(); {
	case err == nil:
		return o, false
	case errors.Is(err, syscall.EAGAIN):
		return linOutput{}, true // conflict: nothing applied
	}
	return linOutput{Unknown: true}, false
}

// recordHistory runs clients (two per host) while faults runs, and
// returns what they saw.
func recordHistory(t *testing.T, c *Cluster, prefix string, faults func()) *history {
	h := &history{base: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	n := len(c.Hosts())
	for id := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			linClient(c, h, id, id%n, prefix, stop)
		}()
	}
	faults()
	close(stop)
	wg.Wait()
	t.Logf("history: %d operations (%d of unknown outcome, %d failed and left out) in %v",
		h.total, h.unknown, h.failed, time.Since(h.base).Round(time.Millisecond))
	return h
}

// checkHistory checks h with porcupine and, when it is not linearizable
// and visualize is set, writes a visualization and returns its path.
func checkHistory(t *testing.T, h *history, visualize bool) (porcupine.CheckResult, string) {
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, h.ops, 60*time.Second)
	t.Logf("porcupine: %s in %v", res, time.Since(start).Round(time.Millisecond))
	if res == porcupine.Ok || !visualize {
		return res, ""
	}
	dir, err := os.MkdirTemp("", "shi-linearizability-")
	if err != nil {
		t.Log(err)
		return res, ""
	}
	path := filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(linModel, info, path); err != nil {
		t.Log(err)
	}
	return res, path
}

// TestLinearizable records randomized concurrent histories with
// -consistent-reads on every agent while hosts fail, and checks them: zero
// violations. On 3 hosts the leader is killed, then cut off, then a
// follower is cut off; on 5 the leader is killed, then the cluster splits
// 2|3 with the leader on the small side.
func TestLinearizable(t *testing.T) {
	t.Run("3-hosts", func(t *testing.T) {
		c := Start(t, Options{Hosts: 3, ConsistentReads: true, CommitTimeout: commitTimeout})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		h := recordHistory(t, c, "/lin", func() {
			pause(time.Second) // the clients work meanwhile
			l := c.Leader(ctx)
			t.Logf("kill the leader %s", c.Host(l).Name)
			c.Host(l).Kill()
			pause(2 * time.Second)
			c.Host(l).Start()
			l = c.Leader(ctx)
			pause(time.Second)
			t.Logf("cut off the leader %s", c.Host(l).Name)
			c.Cut(l)
			pause(3 * time.Second)
			c.Heal(l)
			l = c.Leader(ctx)
			f := (l + 1) % 3
			t.Logf("cut off a follower %s", c.Host(f).Name)
			c.Cut(f)
			// Reads there fail with EAGAIN once the read index cannot be
			// had within the commit timeout.
			x := c.Host(f).XS()
			start := time.Now()
			err := Within(x, opTimeout, func() error { _, err := x.Read("/local/domain/0/name"); return err })
			if took := time.Since(start); !errors.Is(err, syscall.EAGAIN) || took > commitTimeout+3*time.Second {
				t.Errorf("a read on %s, cut off, with -consistent-reads: %v after %v, want EAGAIN within about %v", c.Host(f).Name, err, took, commitTimeout)
			}
			pause(time.Second)
			c.Heal(f)
			c.Leader(ctx)
			pause(time.Second)
		})
		if res, path := checkHistory(t, h, true); res != porcupine.Ok {
			t.Errorf("history with -consistent-reads is %s (visualization: %s)", res, path)
		}
	})
	t.Run("5-hosts", func(t *testing.T) {
		c := Start(t, Options{Hosts: 5, ConsistentReads: true, CommitTimeout: commitTimeout})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		h := recordHistory(t, c, "/lin", func() {
			pause(time.Second)
			l := c.Leader(ctx)
			t.Logf("kill the leader %s", c.Host(l).Name)
			c.Host(l).Kill()
			pause(2 * time.Second)
			c.Host(l).Start()
			l = c.Leader(ctx)
			pause(time.Second)
			small := []int{l, (l + 1) % 5}
			t.Logf("split hosts %v (the leader's side) from %v", small, others(5, small...))
			c.NS.Partition(small, others(5, small...))
			pause(3 * time.Second)
			c.NS.Unpartition()
			c.Leader(ctx)
			pause(time.Second)
		})
		if res, path := checkHistory(t, h, true); res != porcupine.Ok {
			t.Errorf("history with -consistent-reads is %s (visualization: %s)", res, path)
		}
	})
}

// pause lets the clients of a history work for d while nothing changes.
func pause(d time.Duration) { time.Sleep(d) }

// testLocalReads records a history with the default, local reads during a
// leader kill and reports whether reads were stale: only read-your-writes
// per connection is promised there, so this documents, not asserts.
func testLocalReads(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := recordHistory(t, c, "/lin-local", func() {
		pause(2 * time.Second)
		l := c.Leader(ctx)
		c.Host(l).Kill()
		pause(2 * time.Second)
		c.Host(l).Start()
		c.Leader(ctx)
		pause(time.Second)
	})
	res, _ := checkHistory(t, h, false)
	stale, reads := staleReads(h.ops)
	t.Logf("local reads: porcupine says %s; %d of %d reads returned a value already overwritten by a write acknowledged before the read began",
		res, stale, reads)
}

// staleReads counts reads that returned a value (or absence) although a
// newer write had been acknowledged before the read was called: a write
// w2 that started after the write of the value returned, and returned
// before the read started.
func staleReads(ops []porcupine.Operation) (stale, reads int) {
	type span struct{ call, ret int64 }
	writes := map[string]span{}  // by value
	acked := map[string][]span{} // by key
	for _, op := range ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		if in.Kind == linRead {
			continue
		}
		writes[in.Value] = span{op.Call, op.Return}
		if !out.Unknown {
			acked[in.Key] = append(acked[in.Key], span{op.Call, op.Return})
		}
	}
	for _, op := range ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		if in.Kind != linRead {
			continue
		}
		reads++
		after := int64(math.MinInt64) // the returned write's return time
		if out.Found {
			w, ok := writes[out.Value]
			if !ok {
				continue
			}
			after = w.ret
		}
		if slices.ContainsFunc(acked[in.Key], func(w2 span) bool { return w2.call > after && w2.ret < op.Call }) {
			stale++
		}
	}
	return stale, reads
}
