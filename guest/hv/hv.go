// Package hv is a domain's connection to its agent, the hypervisor of a
// shi domain: the channel every hypercall of guest/evtchn and guest/gnttab
// goes through. A domain process inherits it as the descriptor named by
// SHI_DOMAIN_FD; Self opens it once per process.
//
// A Conn is safe for concurrent use. Requests carry ids and a reader
// goroutine matches replies to callers; the same goroutine hands the
// agent's notifications (a peer bound or closed a port, a mapping was
// revoked) to the handler registered for them, in the order the agent
// sent them, and always before the reply to any later request. Handlers
// run on the reader goroutine: they must be quick and must not Call.
package hv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"shi/internal/abi"
	"shi/internal/hypercall"
	"shi/internal/shm"
)

// Environment a domain process is started with.
const (
	EnvFD    = "SHI_DOMAIN_FD" // its agent connection
	EnvDomID = "SHI_DOMID"     // its domain id
	// EnvConsolePTY is set (to "1") for a program the console helper
	// started on a terminal: the helper holds the agent connection.
	EnvConsolePTY = "SHI_CONSOLE_PTY"
)

var (
	// ErrNotDomain means the process was not started as a shi domain.
	ErrNotDomain = errors.New("hv: not a shi domain (SHI_DOMAIN_FD is not set)")
	// ErrConsolePTY means the process runs under its domain's console
	// helper, which holds the domain's one agent connection.
	ErrConsolePTY = fmt.Errorf("%w: this program runs on the domain's console terminal (console = \"pty\", the default), whose helper holds the agent connection; a program that uses the guest library needs console = \"direct\" in its config", ErrNotDomain)
	// ErrClosed means the connection to the agent has ended.
	ErrClosed = errors.New("hv: agent connection closed")
	// ErrProtocol means the agent sent something unexpected.
	ErrProtocol = errors.New("hv: protocol violation by the agent")
)

// Handler receives a notification and owns its descriptors.
type Handler func(m hypercall.Msg, fds []int)

// Conn is a domain's connection to its agent.
type Conn struct {
	c    *net.UnixConn
	done chan struct{}

	domid    abi.DomID
	table    *shm.Mapping
	maxPages int
	maxPorts int
	maxMaps  int

	wmu sync.Mutex // serialises sends

	// mu guards the fields below.
	mu       sync.Mutex
	next     uint32
	pending  map[uint32]call
	handlers map[hypercall.Op]Handler
	err      error

	// valuesMu guards values; mk functions may call Handle, not Value.
	valuesMu sync.Mutex
	values   map[any]any
}

type result struct {
	m   hypercall.Msg
	fds []int
}

// call is a request waiting for its reply.
type call struct {
	ch    chan result
	apply func(r hypercall.Msg, fds []int) // run by the reader, in order
}

var self struct {
	once sync.Once
	c    *Conn
	err  error
}

// Self returns this process's connection to its agent, opening it on the
// first call from the descriptor in SHI_DOMAIN_FD.
func Self() (*Conn, error) {
	self.once.Do(func() {
		s := os.Getenv(EnvFD)
		if s == "" {
			self.err = ErrNotDomain
			if os.Getenv(EnvConsolePTY) != "" {
				self.err = ErrConsolePTY
			}
			return
		}
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 0 {
			self.err = fmt.Errorf("hv: bad %s=%q", EnvFD, s)
			return
		}
		unix.CloseOnExec(fd) // not inherited by programs the domain runs
		uc, err := shm.FileConn(fd)
		if err != nil {
			self.err = err
			return
		}
		self.c, self.err = New(uc)
	})
	return self.c, self.err
}

// New starts speaking to the agent on c (which it owns from now on) and
// learns the domain's identity and grant table.
func New(c *net.UnixConn) (*Conn, error) {
	cn := &Conn{c: c, done: make(chan struct{}), next: 1, pending: map[uint32]call{},
		handlers: map[hypercall.Op]Handler{}, values: map[any]any{}}
	go cn.readLoop()
	r, fds, err := cn.Call(hypercall.Msg{Op: hypercall.OpHello})
	if err != nil {
		cn.Close()
		return nil, err
	}
	if len(fds) != 1 || r.Frame == 0 {
		closeFDs(fds)
		cn.Close()
		return nil, fmt.Errorf("%w: hello without a grant table", ErrProtocol)
	}
	size := int(r.Frame) * abi.PAGE_SIZE
	tm, err := shm.AdoptMemfd(fds[0], size)
	if err != nil {
		unix.Close(fds[0])
		cn.Close()
		return nil, fmt.Errorf("hv: grant table: %w", err)
	}
	cn.table, err = tm.Map(true)
	tm.Close()
	if err != nil {
		cn.Close()
		return nil, err
	}
	cn.domid = abi.DomID(r.Dom)
	cn.maxPages, cn.maxPorts, cn.maxMaps = int(r.Arg[0]), int(r.Arg[1]), int(r.Arg[2])
	return cn, nil
}

// DomID is this domain's id.
func (c *Conn) DomID() abi.DomID { return c.domid }

// GrantTable is this domain's grant table, shared with the agent: the
// domain writes its own v1 entries here (see internal/grantentry).
func (c *Conn) GrantTable() []byte { return c.table.Bytes() }

// Limits are the domain's resource caps: pages it may share, ports, and
// grants it may map at once.
func (c *Conn) Limits() (pages, ports, maps int) { return c.maxPages, c.maxPorts, c.maxMaps }

// Value returns the per-connection value stored under key, creating it
// with mk on first use: the state guest packages keep per domain.
func (c *Conn) Value(key any, mk func() any) any {
	c.valuesMu.Lock()
	defer c.valuesMu.Unlock()
	v, ok := c.values[key]
	if !ok {
		v = mk()
		c.values[key] = v
	}
	return v
}

// Handle registers h for notifications of op, replacing any earlier one.
func (c *Conn) Handle(op hypercall.Op, h Handler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers[op] = h
}

// Call sends a request with descriptors attached (they stay the caller's)
// and waits for its reply. A reply with an errno returns it as a
// syscall.Errno error along with the reply; the reply's descriptors are
// the caller's to close.
func (c *Conn) Call(m hypercall.Msg, fds ...int) (hypercall.Msg, []int, error) {
	return c.call(m, nil, fds)
}

// CallApply is Call, except that apply receives the reply (and owns its
// descriptors) on the reader goroutine, before any later notification is
// handled: state that notifications also change must be updated there.
// apply runs for error replies too.
func (c *Conn) CallApply(m hypercall.Msg, apply func(r hypercall.Msg, fds []int), fds ...int) (hypercall.Msg, error) {
	r, _, err := c.call(m, apply, fds)
	return r, err
}

// Post sends a request from a goroutine of its own and drops the reply:
// for callers that hold locks a call could wait under, and requests whose
// outcome they cannot act on.
func (c *Conn) Post(m hypercall.Msg) {
	go func() {
		_, fds, _ := c.call(m, nil, nil)
		closeFDs(fds)
	}()
}

func (c *Conn) call(m hypercall.Msg, apply func(hypercall.Msg, []int), fds []int) (hypercall.Msg, []int, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return hypercall.Msg{}, nil, err
	}
	m.ID = c.next
	c.next++
	if c.next == 0 {
		c.next = 1
	}
	c.pending[m.ID] = call{ch: ch, apply: apply}
	c.mu.Unlock()

	c.wmu.Lock()
	err := shm.SendMsg(c.c, m.Append(nil), fds...)
	c.wmu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.pending, m.ID)
		c.mu.Unlock()
		c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
		return hypercall.Msg{}, nil, ErrClosed
	}
	select {
	case r := <-ch:
		if r.m.Errno != 0 {
			return r.m, r.fds, fmt.Errorf("%v: %w", m.Op, syscall.Errno(r.m.Errno))
		}
		return r.m, r.fds, nil
	case <-c.done:
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		// A reply may have raced with the end.
		select {
		case r := <-ch:
			closeFDs(r.fds)
		default:
		}
		return hypercall.Msg{}, nil, err
	}
}

func (c *Conn) readLoop() {
	defer close(c.done)
	buf := make([]byte, hypercall.MaxMsg)
	for {
		n, fds, err := shm.RecvMsg(c.c, buf, hypercall.MaxFDs)
		if err != nil || n == 0 {
			closeFDs(fds)
			if err == nil {
				err = ErrClosed
			} else {
				err = fmt.Errorf("%w: %v", ErrClosed, err)
			}
			c.fail(err)
			return
		}
		m, err := hypercall.Decode(buf[:n])
		if err != nil {
			closeFDs(fds)
			c.fail(fmt.Errorf("%w: %v", ErrProtocol, err))
			return
		}
		m.Data = append([]byte(nil), m.Data...)
		c.mu.Lock()
		if m.ID == 0 {
			h := c.handlers[m.Op]
			c.mu.Unlock()
			if h != nil {
				h(m, fds)
			} else {
				closeFDs(fds)
			}
			continue
		}
		cl, ok := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if !ok {
			closeFDs(fds) // a reply to nobody: the agent answered garbage we sent
			continue
		}
		if cl.apply != nil {
			cl.apply(m, fds)
			fds = nil
		}
		cl.ch <- result{m, fds}
	}
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		c.c.Close()
	}
}

// Close ends the connection; the domain can make no more hypercalls. The
// grant table stays mapped (other code may still hold slices of it).
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
