package evtchn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/datadriven"

	"shi/internal/abi"
)

// locator is a fixed map of domains on other hosts.
type locator map[DomID]Host

func (l locator) Locate(dom DomID) (Host, bool) { h, ok := l[dom]; return h, ok }

// TestScripts runs testdata/*.txt. Commands:
//
//	add-domain dom=N [max=N] [priv]        remove-domain dom=N
//	alloc-unbound caller=N [dom=N|self] remote=N|self
//	bind-interdomain caller=N remote=N|self port=N
//	bind-ipi caller=N [vcpu=N]             bind-virq caller=N virq=N [vcpu=N]
//	raise-virq dom=N virq=N                close caller=N port=N
//	send caller=N port=N                   status caller=N [dom=N|self] port=N
//	reset caller=N dom=N|self              ports dom=N
//	remote-domain dom=N host=H             (for the Locator)
//	accept-remote-bind dom=N port=N from=H/D:P
//	reserve-remote caller=N remote=N       complete-remote caller=N port=N peer=H/D:P
//	abort-remote caller=N port=N           deliver from=H op=send|close to=D:P src=D:P
//	drop-host host=H                       drop-domain host=H dom=N
//
// Output: "port N" for binds, then one action per line, or "error: ...".
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		remote := locator{}
		tab := New(remote)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			dom := func(key string) DomID {
				var s string
				d.ScanArgs(t, key, &s)
				return parseDom(t, s)
			}
			optDom := func(key string, def DomID) DomID {
				if !d.HasArg(key) {
					return def
				}
				return dom(key)
			}
			num := func(key string) uint32 {
				var v uint64
				d.ScanArgs(t, key, &v)
				return uint32(v)
			}
			optNum := func(key string) uint32 {
				if !d.HasArg(key) {
					return 0
				}
				return num(key)
			}
			switch d.Cmd {
			case "add-domain":
				return result(0, nil, tab.AddDomain(dom("dom"), DomainConfig{MaxPorts: int(optNum("max")), Privileged: d.HasArg("priv")}))
			case "remove-domain":
				return result(0, tab.RemoveDomain(dom("dom")), nil)
			case "remote-domain":
				var h string
				d.ScanArgs(t, "host", &h)
				remote[dom("dom")] = Host(h)
				return ""
			case "alloc-unbound":
				c := dom("caller")
				p, acts, err := tab.AllocUnbound(c, optDom("dom", abi.DOMID_SELF), dom("remote"))
				return result(p, acts, err)
			case "bind-interdomain":
				p, acts, err := tab.BindInterdomain(dom("caller"), dom("remote"), Port(num("port")))
				return result(p, acts, err)
			case "bind-ipi":
				p, acts, err := tab.BindIPI(dom("caller"), optNum("vcpu"))
				return result(p, acts, err)
			case "bind-virq":
				p, acts, err := tab.BindVIRQ(dom("caller"), num("virq"), optNum("vcpu"))
				return result(p, acts, err)
			case "raise-virq":
				return result(0, tab.RaiseVIRQ(dom("dom"), num("virq")), nil)
			case "close":
				acts, err := tab.Close(dom("caller"), Port(num("port")))
				return result(0, acts, err)
			case "send":
				acts, err := tab.Send(dom("caller"), Port(num("port")))
				return result(0, acts, err)
			case "reset":
				acts, err := tab.Reset(dom("caller"), dom("dom"))
				return result(0, acts, err)
			case "status":
				c := dom("caller")
				st, err := tab.Status(c, optDom("dom", abi.DOMID_SELF), Port(num("port")))
				if err != nil {
					return result(0, nil, err)
				}
				return formatStatus(st)
			case "ports":
				var b strings.Builder
				for _, p := range tab.Ports(dom("dom")) {
					fmt.Fprintf(&b, "%d %v", p.Port, p.State)
					switch p.State {
					case Unbound:
						fmt.Fprintf(&b, " for dom%d", p.Remote.Dom)
					case Interdomain, IPI:
						fmt.Fprintf(&b, " -> %v", p.Remote)
					case VIRQ:
						fmt.Fprintf(&b, " virq %d", p.VIRQ)
					}
					b.WriteString("\n")
				}
				return b.String()
			case "accept-remote-bind":
				var from string
				d.ScanArgs(t, "from", &from)
				acts, err := tab.AcceptRemoteBind(dom("dom"), Port(num("port")), parseEndpoint(t, from))
				return result(0, acts, err)
			case "reserve-remote":
				p, err := tab.ReserveRemote(dom("caller"), dom("remote"))
				return result(p, nil, err)
			case "complete-remote":
				var peer string
				d.ScanArgs(t, "peer", &peer)
				acts, err := tab.CompleteRemote(dom("caller"), Port(num("port")), parseEndpoint(t, peer))
				return result(0, acts, err)
			case "abort-remote":
				tab.AbortRemote(dom("caller"), Port(num("port")))
				return "ok\n"
			case "drop-host":
				var h string
				d.ScanArgs(t, "host", &h)
				return result(0, tab.DropHost(Host(h)), nil)
			case "drop-domain":
				var h string
				d.ScanArgs(t, "host", &h)
				return result(0, tab.DropDomain(Host(h), dom("dom")), nil)
			case "deliver":
				var from, op, to, src string
				d.ScanArgs(t, "from", &from)
				d.ScanArgs(t, "op", &op)
				d.ScanArgs(t, "to", &to)
				d.ScanArgs(t, "src", &src)
				m := Message{Op: OpSend, To: parseEndpoint(t, to), From: parseEndpoint(t, src)}
				if op == "close" {
					m.Op = OpClose
				}
				return result(0, tab.Deliver(Host(from), m), nil)
			}
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		})
	})
}

func parseDom(t *testing.T, s string) DomID {
	if s == "self" {
		return abi.DOMID_SELF
	}
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		t.Fatalf("bad domain %q", s)
	}
	return DomID(v)
}

// parseEndpoint reads [host/]dom:port.
func parseEndpoint(t *testing.T, s string) Endpoint {
	var e Endpoint
	if h, rest, ok := strings.Cut(s, "/"); ok {
		e.Host, s = Host(h), rest
	}
	d, p, ok := strings.Cut(s, ":")
	if !ok {
		t.Fatalf("bad endpoint %q", s)
	}
	e.Dom = parseDom(t, d)
	v, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		t.Fatalf("bad endpoint %q", s)
	}
	e.Port = Port(v)
	return e
}

func result(p Port, acts []Action, err error) string {
	var b strings.Builder
	if err != nil {
		var rd *RemoteDomainError
		switch {
		case errors.As(err, &rd):
			fmt.Fprintf(&b, "error: remote dom%d on %s\n", rd.Dom, rd.Host)
		default:
			var errno syscall.Errno
			errors.As(err, &errno)
			fmt.Fprintf(&b, "error: %s (%v)\n", errnoName(errno), err)
		}
		return b.String()
	}
	if p != 0 {
		fmt.Fprintf(&b, "port %d\n", p)
	}
	for _, a := range acts {
		b.WriteString(a.String() + "\n")
	}
	if b.Len() == 0 {
		return "ok\n"
	}
	return b.String()
}

func errnoName(e syscall.Errno) string {
	for _, n := range []struct {
		e    syscall.Errno
		name string
	}{{syscall.EINVAL, "EINVAL"}, {syscall.ESRCH, "ESRCH"}, {syscall.EPERM, "EPERM"}, {syscall.ENOSPC, "ENOSPC"},
		{syscall.EEXIST, "EEXIST"}, {syscall.ENOENT, "ENOENT"}} {
		if n.e == e {
			return n.name
		}
	}
	return fmt.Sprintf("errno %d", int(e))
}

func formatStatus(st abi.EvtchnStatus) string {
	s := fmt.Sprintf("dom%d port %d: %v", st.Dom, st.Port, State(st.Status))
	switch st.Status {
	case abi.EVTCHNSTAT_unbound:
		s += fmt.Sprintf(" remote dom%d", st.RemoteDom)
	case abi.EVTCHNSTAT_interdomain:
		s += fmt.Sprintf(" remote dom%d port %d", st.RemoteDom, st.RemotePort)
	case abi.EVTCHNSTAT_virq:
		s += fmt.Sprintf(" virq %d", st.Num)
	}
	return s + "\n"
}

// TestPortExhaustion checks lowest-free allocation up to the 2-level limit.
func TestPortExhaustion(t *testing.T) {
	tab := New(nil)
	if err := tab.AddDomain(1, DomainConfig{MaxPorts: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for want := Port(1); want < abi.EVTCHN_2L_NR_CHANNELS; want++ {
		p, _, err := tab.AllocUnbound(1, abi.DOMID_SELF, 0)
		if err != nil || p != want {
			t.Fatalf("alloc %d: port %d, %v", want, p, err)
		}
	}
	if _, _, err := tab.AllocUnbound(1, abi.DOMID_SELF, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("alloc past 4095: %v", err)
	}
	if _, err := tab.Close(1, 2000); err != nil {
		t.Fatal(err)
	}
	if p, _, err := tab.AllocUnbound(1, abi.DOMID_SELF, 0); err != nil || p != 2000 {
		t.Fatalf("reuse: port %d, %v", p, err)
	}
	if _, err := tab.Status(1, 1, abi.EVTCHN_2L_NR_CHANNELS); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("status past the limit: %v", err)
	}
}
