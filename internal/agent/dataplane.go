package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"shi/internal/abi"
	"shi/internal/hypervisor"
	"shi/internal/membership"
	"shi/internal/transport"
)

// The data plane: the hypervisor's peer protocol and the links between
// domains, over internal/transport on the data address that membership
// gossips (Meta.DataAddr).

// startDataPlane listens on the data port and starts the mesh; the
// hypervisor must exist (the mesh hands it inbound traffic).
func (a *agent) startDataPlane() error {
	l, err := net.Listen("tcp", net.JoinHostPort(a.cfg.BindIP, strconv.Itoa(a.cfg.DataPort)))
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	m, err := transport.New(transport.Config{
		Name:     a.cfg.Name,
		Listener: l,
		Key:      a.cfg.EncryptKey,
		TLS:      a.tls,
		Resolve:  a.dataAddr,
		Handle:   a.hv.Inbound,
		Link:     a.acceptLink,
		Faults:   a.faults,
		Logger:   a.log.With("sub", "transport"),
	})
	if err != nil {
		l.Close()
		return fmt.Errorf("data plane: %w", err)
	}
	a.mesh = m
	return nil
}

// dataAddr is the data address membership advertises for a host.
func (a *agent) dataAddr(host string) (string, bool) {
	if a.members == nil {
		return "", false
	}
	for _, m := range a.members.Members() {
		if m.Name == host && m.Meta.DataAddr != "" {
			return m.Meta.DataAddr, true
		}
	}
	return "", false
}

// acceptLink hands a link another host dialed to the hypervisor: it is
// recorded before the verdict goes out (LinkFile sends it), so the
// dialer's requests find it, and handed to the domain after.
func (a *agent) acceptLink(from string, hello []byte, c net.Conn) error {
	up, err := a.hv.AcceptLink(from, hello)
	if err != nil {
		var e syscall.Errno
		if errors.As(err, &e) {
			return e
		}
		return err
	}
	f, err := a.mesh.LinkFile(c)
	up(f) // nil: gives up
	return err
}

// meshPeers is the hypervisor's view of the mesh, which starts after the
// hypervisor is built.
type meshPeers struct{ a *agent }

var _ hypervisor.Peers = meshPeers{}

// Send implements hypervisor.Peers.Send.
func (p meshPeers) Send(host string, m *transport.Msg) error {
	if p.a.mesh == nil {
		return transport.ErrClosed
	}
	return p.a.mesh.Send(host, m)
}

// Link implements hypervisor.Peers.Link.
func (p meshPeers) Link(ctx context.Context, host string, hello []byte) (*os.File, error) {
	if p.a.mesh == nil {
		return nil, transport.ErrClosed
	}
	c, err := p.a.mesh.DialLink(ctx, host, hello)
	if err != nil {
		return nil, err
	}
	return p.a.mesh.LinkFile(c)
}

// hostDown tells the hypervisor and the mesh that membership gave up on
// a host: its domains' ports, maps and links go at once.
func (a *agent) hostDown(ev membership.Event) {
	if ev.Type != membership.EventFailed && ev.Type != membership.EventLeft {
		return
	}
	a.hv.HostDown(ev.Member.Name)
	a.mesh.Forget(ev.Member.Name)
}

// domainLoop tells the hypervisor about domains of other hosts that stop
// running (destroyed, crashed, their host restarted): peers bound to them
// see their ports unbound even when the domain's host could not say so.
func (a *agent) domainLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	running := map[uint32]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := map[uint32]string{}
		for _, d := range a.replica.Domains() {
			if d.Host != a.cfg.Name && d.Running() {
				now[d.ID] = d.Host
			}
		}
		for id, host := range running {
			if now[id] != host {
				a.hv.DomainGone(host, abi.DomID(id))
			}
		}
		running = now
	}
}
