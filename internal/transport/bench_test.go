package transport

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkSend measures small frames from A to B through two meshes on
// loopback, Send to Handle, one sender goroutine.
func BenchmarkSend(b *testing.B) {
	for _, size := range []int{0, 64, 1024} {
		b.Run(fmt.Sprintf("mesh/data=%d", size), func(b *testing.B) { benchMesh(b, size) })
		b.Run(fmt.Sprintf("raw/data=%d", size), func(b *testing.B) { benchRaw(b, size) })
	}
}

func benchMesh(b *testing.B, size int) {
	tn := newTestNet(b)
	var got atomic.Int64
	var target atomic.Int64
	done := make(chan struct{}, 1)
	quiet := func(c *Config, _ *tunables) { c.Logger = slog.New(slog.DiscardHandler) }
	a := tn.start("A", "", quiet)
	tn.start("B", "", func(c *Config, tun *tunables) {
		quiet(c, tun)
		c.Handle = func(string, Msg) {
			if got.Add(1) == target.Load() {
				done <- struct{}{}
			}
		}
	})
	m := Msg{Kind: KindSend, FromDom: 1, ToDom: 2, ToPort: 3, Data: make([]byte, size)}
	send := func(n int) {
		target.Store(got.Load() + int64(n))
		for range n {
			for {
				err := a.Send("B", &m)
				if err == nil {
					break
				}
				if !errors.Is(err, ErrQueueFull) {
					b.Fatal(err)
				}
				runtime.Gosched()
			}
		}
		<-done
	}
	send(1) // connect
	before := a.Stats()
	b.SetBytes(int64(FrameSize(&m)))
	b.ResetTimer()
	send(b.N)
	b.StopTimer()
	s := a.Stats()
	b.ReportMetric(float64(s.FramesSent-before.FramesSent)/float64(s.Writes-before.Writes), "frames/write")
}

// benchRaw is the baseline: the same frames encoded into a bufio.Writer on
// a bare loopback TCP connection and decoded by a Reader, with no queue,
// locks or goroutine hand-off.
func benchRaw(b *testing.B, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	target := b.N
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		r := NewReader(c)
		for range target {
			if _, err := r.Next(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriterSize(c, chunkSize)
	m := Msg{Kind: KindSend, FromDom: 1, ToDom: 2, ToPort: 3, Data: make([]byte, size)}
	buf := make([]byte, 0, MaxFrame)
	b.SetBytes(int64(FrameSize(&m)))
	b.ResetTimer()
	for range b.N {
		buf = AppendFrame(buf[:0], &m)
		w.Write(buf)
	}
	w.Flush()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
