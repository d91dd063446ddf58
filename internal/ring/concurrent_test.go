package ring

import (
	"encoding/binary"
	"runtime"
	"testing"

	"shi/internal/abi"
)

// TestStreamConcurrent streams bytes between two goroutines through one
// ring. Under -race it also checks that the index atomics order the data
// bytes, as the barriers in Xen's protocol do.
func TestStreamConcurrent(t *testing.T) {
	page := AlignedBytes(4096)
	_, out, err := Console(page)
	if err != nil {
		t.Fatal(err)
	}
	const total = 1 << 20
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 700)
		var sent int
		for sent < total {
			for i := range buf {
				buf[i] = byte((sent + i) % 251)
			}
			n, err := out.Write(buf[:min(len(buf), total-sent)])
			if err != nil {
				done <- err
				return
			}
			sent += n
			if n == 0 {
				runtime.Gosched()
			}
		}
		done <- nil
	}()
	buf := make([]byte, 1000)
	for got := 0; got < total; {
		n, err := out.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if buf[i] != byte((got+i)%251) {
				t.Fatalf("byte %d = %d", got+i, buf[i])
			}
		}
		got += n
		if n == 0 {
			runtime.Gosched()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRingConcurrent runs a front and a back end in two goroutines, each
// sleeping (spinning on Gosched) only after a final check, and waking only
// when the other side's push says to notify.
func TestRingConcurrent(t *testing.T) {
	sh := AlignedBytes(4096)
	Init(sh)
	f, _ := NewFront(sh, abi.BlkifResponseSize)
	b, _ := NewBack(sh, abi.BlkifResponseSize)
	const total = 100000
	kickBack := make(chan struct{}, 1)
	kickFront := make(chan struct{}, 1)
	notify := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	done := make(chan error, 1)
	go func() { // back end: echo id+1
		for served := 0; served < total; {
			req, err := b.NextRequest()
			if err != nil {
				done <- err
				return
			}
			if req == nil {
				if work, _ := b.FinalCheckForRequests(); !work {
					<-kickBack
				}
				continue
			}
			id := binary.LittleEndian.Uint64(req)
			binary.LittleEndian.PutUint64(b.NextResponse(), id+1)
			served++
			if b.PushResponses() {
				notify(kickFront)
			}
		}
		done <- nil
	}()
	var sent, recvd uint64
	for recvd < total {
		for sent < total && !f.Full() {
			binary.LittleEndian.PutUint64(f.NextRequest(), sent)
			sent++
		}
		if f.PushRequests() {
			notify(kickBack)
		}
		rsp, err := f.NextResponse()
		if err != nil {
			t.Fatal(err)
		}
		if rsp == nil {
			if work, _ := f.FinalCheckForResponses(); !work {
				<-kickFront
			}
			continue
		}
		if got := binary.LittleEndian.Uint64(rsp); got != recvd+1 {
			t.Fatalf("response %d = %d", recvd, got)
		}
		recvd++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
