package membership

import (
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"shi/internal/faultnet"
)

// faultTransport puts faultnet between memberlist and its NetTransport:
// datagrams go through the packet hook (delay, loss, cut) on the way out
// and are dropped from cut peers on the way in; streams are wrapped with
// faultnet.Conn and dials with faultnet.DialTimeout.
type faultTransport struct {
	*memberlist.NetTransport
	f *faultnet.Faults

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

func newFaultTransport(nt *memberlist.NetTransport, f *faultnet.Faults) *faultTransport {
	t := &faultTransport{
		NetTransport: nt,
		f:            f,
		packetCh:     make(chan *memberlist.Packet),
		streamCh:     make(chan net.Conn),
		stop:         make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *faultTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.NetTransport.PacketCh():
			if p.From != nil && t.f.Blocked(p.From.String()) {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *faultTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.NetTransport.StreamCh():
			c = t.f.Conn(c, c.RemoteAddr().String())
			select {
			case t.streamCh <- c:
			case <-t.stop:
				c.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

// WriteTo implements memberlist.Transport.WriteTo.
func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport.WriteToAddress.
// A dropped datagram is reported as sent, as the network would; a delayed
// one is sent later from a timer, so the returned time makes memberlist's
// RTT include the delay.
func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	drop, d := t.f.Packet(a.Addr)
	if drop {
		return time.Now(), nil
	}
	if d > 0 {
		buf := bytes.Clone(b)
		time.AfterFunc(d, func() { _, _ = t.NetTransport.WriteToAddress(buf, a) })
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

// PacketCh implements memberlist.Transport.PacketCh.
func (t *faultTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh implements memberlist.Transport.StreamCh.
func (t *faultTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout implements memberlist.Transport.DialTimeout. A dial to a cut
// peer hangs like faultnet.DialTimeout's, but ends early on Shutdown so
// that shutting down never waits for it.
func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.Blocked(addr) {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.stop:
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: faultnet.ErrBlocked}
	}
	return t.f.DialTimeout(t.NetTransport.DialTimeout)(addr, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.DialAddressTimeout.
func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown implements memberlist.Transport.Shutdown. The forwarders keep
// running while NetTransport shuts down, since its listeners may be
// blocked handing us a packet or stream.
func (t *faultTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	close(t.stop)
	t.wg.Wait()
	return err
}
