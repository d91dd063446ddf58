package transport

import (
	"runtime"
	"testing"
	"time"

	"shi/internal/faultnet"
)

// TestCloseLeavesNoGoroutines: Close ends every goroutine the mesh started,
// whatever each was doing: writers connected or backing off, watchers,
// readers, a handshake in progress, LinkFile relays.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		f := faultnet.New()
		tn := newTestNet(t)
		bl := newLinkSide()
		chk := &checker{from: "A"}
		a := tn.start("A", "", func(c *Config, _ *tunables) { c.Faults = f })
		b := tn.start("B", "", func(c *Config, _ *tunables) { c.Faults, c.Link, c.Handle = f, bl.link, chk.handle })
		bl.m = b.Mesh
		for i := range 1000 {
			m := gen(i)
			if err := a.Send("B", &m); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send("A", &Msg{Kind: KindSend}); err != nil {
			t.Fatal(err)
		}
		if err := a.Send("ghost", &Msg{Kind: KindSend}); err != nil { // a writer backing off
			t.Fatal(err)
		}
		waitFor(t, "messages", func() bool { return chk.count() == 1000 })

		f.SetDelay(time.Millisecond, 0) // links made now are relayed
		ca, err := a.DialLink(ctxTimeout(t, 5*time.Second), "B", []byte("file"))
		if err != nil {
			t.Fatal(err)
		}
		fa, err := a.LinkFile(ca) // relayed: a fault is set
		if err != nil {
			t.Fatal(err)
		}
		defer fa.Close()
		defer (<-bl.files).Close()
		rawConn(t, b, "") // B waits in its handshake
		waitFor(t, "B to accept the raw connection", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.conns) == 2 })

		if n := runtime.NumGoroutine(); n < before+10 {
			t.Fatalf("only %d goroutines running, %d before: the test exercises too little", n, before)
		}
		a.Close()
		b.Close()
	}()
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
