package ring

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	ghv "shi/guest/hv"
	"shi/internal/abi"
	"shi/internal/hypervisor"
	"shi/internal/shm"
)

// pair connects two in-process domains, 1 and 2, to one hypervisor.
func pair(t *testing.T) (a, b *ghv.Conn) {
	t.Helper()
	h := hypervisor.New(hypervisor.Config{})
	t.Cleanup(h.Close)
	conn := func(id abi.DomID) *ghv.Conn {
		f, err := h.AddDomain(id, hypervisor.DomainConfig{})
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := unix.Dup(int(f.Fd()))
		f.Close()
		uc, err := shm.FileConn(fd)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ghv.New(uc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return conn(1), conn(2)
}

// channel binds a port of a to a port of b, each on its own handle, and
// consumes b's initial event.
func channel(t *testing.T, a, b *ghv.Conn) (ea *evtchn.Handle, pa evtchn.Port, eb *evtchn.Handle, pb evtchn.Port) {
	t.Helper()
	var err error
	if ea, err = evtchn.Open(a); err != nil {
		t.Fatal(err)
	}
	if eb, err = evtchn.Open(b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ea.Close(); eb.Close() })
	if pa, err = ea.AllocUnbound(2); err != nil {
		t.Fatal(err)
	}
	if pb, err = eb.BindInterdomain(1, pa); err != nil {
		t.Fatal(err)
	}
	if _, err := eb.Wait(time.Second); err != nil {
		t.Fatal(err)
	}
	eb.Unmask(pb)
	return
}

func TestRequestResponse(t *testing.T) {
	a, b := pair(t)
	ea, pa, eb, pb := channel(t, a, b)
	s, err := gnttab.Open(a).SharePages(2, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	front, err := NewFront(s.Bytes(), 16, ea, pa)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gnttab.Open(b).Map(1, s.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := NewBack(m.Bytes(), 16, eb, pb)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	done := make(chan error, 1)
	go func() { // the back end doubles each value
		le := binary.LittleEndian
		for served := 0; served < n; {
			if err := back.WaitRequests(time.Now().Add(5 * time.Second)); err != nil {
				done <- err
				return
			}
			for {
				req, err := back.NextRequest()
				if err != nil {
					done <- err
					return
				}
				if req == nil {
					break
				}
				id, v := le.Uint64(req), le.Uint64(req[8:])
				rsp := back.NextResponse()
				le.PutUint64(rsp, id)
				le.PutUint64(rsp[8:], 2*v)
				served++
			}
			if err := back.Push(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	le := binary.LittleEndian
	sent, got := 0, 0
	for got < n {
		for sent < n && !front.Full() {
			req := front.NextRequest()
			le.PutUint64(req, uint64(sent))
			le.PutUint64(req[8:], uint64(sent)*3)
			sent++
		}
		if err := front.Push(); err != nil {
			t.Fatal(err)
		}
		if err := front.WaitResponses(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		for {
			rsp, err := front.NextResponse()
			if err != nil {
				t.Fatal(err)
			}
			if rsp == nil {
				break
			}
			if id, v := le.Uint64(rsp), le.Uint64(rsp[8:]); id != uint64(got) || v != 6*id {
				t.Fatalf("response %d: id %d value %d", got, id, v)
			}
			got++
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPipe(t *testing.T) {
	a, b := pair(t)
	ea, pa, eb, pb := channel(t, a, b)
	s, err := gnttab.Open(a).SharePages(2, 1+4, true) // 16 KiB data area
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewPipeWriter(s.Bytes(), ea, pa)
	if err != nil {
		t.Fatal(err)
	}
	m, err := gnttab.Open(b).Map(1, s.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewPipeReader(m.Bytes(), eb, pb)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	go func() {
		for off := 0; off < len(data); off += 10000 {
			w.Write(data[off:min(off+10000, len(data))])
		}
		w.Close()
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("pipe corrupted the stream: crc %x vs %x, len %d vs %d", crc32.ChecksumIEEE(got), crc32.ChecksumIEEE(data), len(got), len(data))
	}
}
