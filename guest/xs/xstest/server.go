// Package xstest is a small in-memory XenStore daemon for testing clients
// (guest/xs, the CLI) without an agent. It follows the protocol closely
// enough for a client to tell nothing wrong (paths, relative paths, values,
// permissions lists, watches and their first event, DIRECTORY_PART,
// transactions, domain introduction) but it is not the real store: it does
// not check permissions or quotas, and its transactions conflict whenever
// anything at all was committed since they started. The real core is
// internal/xenstore.
package xstest

import (
	"bytes"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// Server is the fake daemon. Its exported knobs may be set before use or,
// with the lock implied by SetKnobs, while serving.
type Server struct {
	mu sync.Mutex
	// guarded by mu:
	tree       map[string]*node
	gen        uint64
	conns      map[*conn]bool
	introduced map[uint32]bool
	maxDir     int // DIRECTORY replies longer than this fail with E2BIG
	partChunk  int // bytes of names per DIRECTORY_PART reply
	failCommit int // commits still to fail with EAGAIN
	requests   []wire.Msg
	lns        []net.Listener
}

type node struct {
	value    []byte
	perms    []string
	children []string
}

// NewServer returns a daemon whose tree holds "/" and "/local/domain/0".
func NewServer() *Server {
	s := &Server{
		tree:       map[string]*node{"/": {perms: []string{"n0"}}},
		conns:      make(map[*conn]bool),
		introduced: make(map[uint32]bool),
		maxDir:     abi.XENSTORE_PAYLOAD_MAX,
		partChunk:  abi.XENSTORE_PAYLOAD_MAX - 32,
	}
	s.tree = mkdirAll(s.tree, "/local/domain/0")
	return s
}

// SetDirectoryLimits makes DIRECTORY fail with E2BIG above maxDir bytes and
// DIRECTORY_PART return at most chunk bytes of names, to exercise clients'
// fallback on small lists.
func (s *Server) SetDirectoryLimits(maxDir, chunk int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxDir, s.partChunk = maxDir, chunk
}

// FailCommits makes the next n successful-looking commits fail with EAGAIN.
func (s *Server) FailCommits(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCommit = n
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []wire.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.Msg(nil), s.requests...)
}

// Pair returns the client end of a new socketpair whose other end the
// server serves until either end closes.
func (s *Server) Pair() (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "xstest")
		cs[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	go s.Serve(cs[1])
	return cs[0], nil
}

// Listen serves on a Unix socket at path until Close.
func (s *Server) Listen(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.Serve(c)
		}
	}()
	return nil
}

// Close stops every listener and connection.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	return nil
}

type conn struct {
	nc  net.Conn
	wmu sync.Mutex
	// guarded by Server.mu:
	watches []watch
	txs     map[uint32]*txn
	nextTx  uint32
}

type watch struct{ path, token string }

type txn struct {
	tree   map[string]*node
	gen    uint64
	events []string
}

// Serve answers requests on nc until it closes or sends a bad frame.
func (s *Server) Serve(nc net.Conn) {
	c := &conn{nc: nc, txs: make(map[uint32]*txn), nextTx: 1}
	s.mu.Lock()
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		nc.Close()
	}()
	for {
		m, err := wire.Read(nc)
		if err != nil {
			return
		}
		s.handle(c, m)
	}
}

func (c *conn) send(m wire.Msg) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	m.Write(c.nc)
}

const home = "/local/domain/0"

// handle answers m.
func (s *Server) handle(c *conn, m wire.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, m)
	reply, events, errno := s.do(c, m)
	if errno != 0 {
		c.send(wire.ErrorReply(m, errno))
		return
	}
	c.send(wire.Reply(m, reply))
	for _, e := range events {
		s.fireLocked(e.path, e.exact)
	}
	if m.Type == abi.XS_WATCH {
		w := c.watches[len(c.watches)-1]
		c.send(wire.WatchEvent(w.path, w.token))
	}
}

type event struct {
	path  string
	exact bool // fire only watches on exactly this path
}

func (s *Server) do(c *conn, m wire.Msg) ([]byte, []event, syscall.Errno) {
	tree := s.tree
	var tx *txn
	switch m.Type {
	case abi.XS_DIRECTORY, abi.XS_READ, abi.XS_GET_PERMS, abi.XS_TRANSACTION_START, abi.XS_TRANSACTION_END,
		abi.XS_WRITE, abi.XS_MKDIR, abi.XS_RM, abi.XS_SET_PERMS, abi.XS_DIRECTORY_PART, abi.XS_GET_DOMAIN_PATH:
		if m.TxID != 0 {
			if tx = c.txs[m.TxID]; tx == nil {
				return nil, nil, syscall.ENOENT
			}
			tree = tx.tree
		}
	}
	args, _ := wire.Strings(m.Payload)
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	// commit applies a modified tree, inside or outside a transaction.
	commit := func(t map[string]*node, evs []event) []event {
		if tx != nil {
			tx.tree = t
			for _, e := range evs {
				tx.events = append(tx.events, e.path)
			}
			return nil
		}
		s.tree = t
		s.gen++
		return evs
	}
	switch m.Type {
	case abi.XS_READ:
		p, ok := resolve(arg(0))
		if !ok {
			return nil, nil, syscall.EINVAL
		}
		n := tree[p]
		if n == nil {
			return nil, nil, syscall.ENOENT
		}
		return append([]byte(nil), n.value...), nil, 0
	case abi.XS_WRITE:
		i := bytes.IndexByte(m.Payload, 0)
		if i < 0 {
			return nil, nil, syscall.EINVAL
		}
		p, ok := resolve(string(m.Payload[:i]))
		if !ok || p[0] == '@' {
			return nil, nil, syscall.EINVAL
		}
		t := mkdirAll(clone(tree), p)
		t[p].value = append([]byte(nil), m.Payload[i+1:]...)
		return wire.OK, commit(t, []event{{path: string(m.Payload[:i])}}), 0
	case abi.XS_MKDIR:
		p, ok := resolve(arg(0))
		if !ok || p[0] == '@' {
			return nil, nil, syscall.EINVAL
		}
		if tree[p] != nil {
			return wire.OK, nil, 0
		}
		return wire.OK, commit(mkdirAll(clone(tree), p), []event{{path: arg(0)}}), 0
	case abi.XS_RM:
		p, ok := resolve(arg(0))
		if !ok || p == "/" || p[0] == '@' {
			return nil, nil, syscall.EINVAL
		}
		if tree[p] == nil {
			if tree[parent(p)] == nil {
				return nil, nil, syscall.ENOENT
			}
			return wire.OK, nil, 0
		}
		t := clone(tree)
		var evs []event
		for q := range t {
			if strings.HasPrefix(q, p+"/") {
				delete(t, q)
				evs = append(evs, event{path: q, exact: true})
			}
		}
		sort.Slice(evs, func(i, j int) bool { return evs[i].path < evs[j].path })
		delete(t, p)
		pp := parent(p)
		t[pp] = cloneNode(t[pp])
		t[pp].children = remove(t[pp].children, base(p))
		return wire.OK, commit(t, append([]event{{path: arg(0)}}, evs...)), 0
	case abi.XS_DIRECTORY:
		p, ok := resolve(arg(0))
		if !ok {
			return nil, nil, syscall.EINVAL
		}
		n := tree[p]
		if n == nil {
			return nil, nil, syscall.ENOENT
		}
		out := wire.JoinStrings(n.children...)
		if len(out) > s.maxDir {
			return nil, nil, syscall.E2BIG
		}
		return out, nil, 0
	case abi.XS_DIRECTORY_PART:
		p, ok := resolve(arg(0))
		off, err := strconv.Atoi(arg(1))
		if !ok || err != nil || off < 0 {
			return nil, nil, syscall.EINVAL
		}
		n := tree[p]
		if n == nil {
			return nil, nil, syscall.ENOENT
		}
		all := wire.JoinStrings(n.children...)
		out := []byte(strconv.FormatUint(s.gen, 10) + "\x00")
		if off >= len(all) {
			return append(out, 0), nil, 0
		}
		rest, took := all[off:], 0
		for took < len(rest) {
			j := bytes.IndexByte(rest[took:], 0) + 1
			if took > 0 && took+j > s.partChunk {
				break
			}
			took += j
		}
		out = append(out, rest[:took]...)
		if took == len(rest) {
			out = append(out, 0)
		}
		return out, nil, 0
	case abi.XS_GET_PERMS:
		p, ok := resolve(arg(0))
		if !ok {
			return nil, nil, syscall.EINVAL
		}
		n := tree[p]
		if n == nil {
			return nil, nil, syscall.ENOENT
		}
		return wire.JoinStrings(n.perms...), nil, 0
	case abi.XS_SET_PERMS:
		p, ok := resolve(arg(0))
		if !ok || len(args) < 2 {
			return nil, nil, syscall.EINVAL
		}
		for _, q := range args[1:] {
			if len(q) < 2 || !strings.ContainsRune("nrwb", rune(q[0])) {
				return nil, nil, syscall.EINVAL
			}
			if _, err := strconv.ParseUint(q[1:], 10, 16); err != nil {
				return nil, nil, syscall.EINVAL
			}
		}
		if tree[p] == nil {
			return nil, nil, syscall.ENOENT
		}
		t := clone(tree)
		t[p] = cloneNode(t[p])
		t[p].perms = append([]string(nil), args[1:]...)
		return wire.OK, commit(t, []event{{path: arg(0)}}), 0
	case abi.XS_WATCH:
		if len(args) < 2 {
			return nil, nil, syscall.EINVAL
		}
		if _, ok := resolve(args[0]); !ok {
			return nil, nil, syscall.EINVAL
		}
		for _, w := range c.watches {
			if w.path == args[0] && w.token == args[1] {
				return nil, nil, syscall.EEXIST
			}
		}
		c.watches = append(c.watches, watch{args[0], args[1]})
		return wire.OK, nil, 0
	case abi.XS_UNWATCH:
		for i, w := range c.watches {
			if w.path == arg(0) && w.token == arg(1) {
				c.watches = append(c.watches[:i], c.watches[i+1:]...)
				return wire.OK, nil, 0
			}
		}
		return nil, nil, syscall.ENOENT
	case abi.XS_TRANSACTION_START:
		if m.TxID != 0 {
			return nil, nil, syscall.EBUSY
		}
		id := c.nextTx
		c.nextTx++
		c.txs[id] = &txn{tree: s.tree, gen: s.gen}
		return wire.JoinStrings(strconv.FormatUint(uint64(id), 10)), nil, 0
	case abi.XS_TRANSACTION_END:
		if tx == nil {
			return nil, nil, syscall.ENOENT
		}
		delete(c.txs, m.TxID)
		switch arg(0) {
		case "F":
			return wire.OK, nil, 0
		case "T":
		default:
			return nil, nil, syscall.EINVAL
		}
		if s.failCommit > 0 {
			s.failCommit--
			return nil, nil, syscall.EAGAIN
		}
		if s.gen != tx.gen {
			return nil, nil, syscall.EAGAIN
		}
		if len(tx.events) == 0 {
			return wire.OK, nil, 0
		}
		s.tree = tx.tree
		s.gen++
		var evs []event
		for _, p := range tx.events {
			evs = append(evs, event{path: p})
		}
		return wire.OK, evs, 0
	case abi.XS_GET_DOMAIN_PATH:
		d, err := strconv.ParseUint(arg(0), 10, 16)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		return wire.JoinStrings("/local/domain/" + strconv.FormatUint(d, 10)), nil, 0
	case abi.XS_INTRODUCE:
		d, err := strconv.ParseUint(arg(0), 10, 16)
		if err != nil || len(args) < 3 {
			return nil, nil, syscall.EINVAL
		}
		s.introduced[uint32(d)] = true
		return wire.OK, []event{{path: "@introduceDomain", exact: true}}, 0
	case abi.XS_RELEASE:
		d, err := strconv.ParseUint(arg(0), 10, 16)
		if err != nil || d == 0 {
			return nil, nil, syscall.EINVAL
		}
		if !s.introduced[uint32(d)] {
			return nil, nil, syscall.ENOENT
		}
		delete(s.introduced, uint32(d))
		return wire.OK, []event{{path: "@releaseDomain", exact: true}}, 0
	case abi.XS_IS_DOMAIN_INTRODUCED:
		d, err := strconv.ParseUint(arg(0), 10, 16)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		if d == 0 || s.introduced[uint32(d)] {
			return wire.JoinStrings("T"), nil, 0
		}
		return wire.JoinStrings("F"), nil, 0
	case abi.XS_RESET_WATCHES:
		c.watches = nil
		c.txs = make(map[uint32]*txn)
		return wire.OK, nil, 0
	case abi.XS_CONTROL:
		if arg(0) == "print" {
			return wire.OK, nil, 0
		}
		return nil, nil, syscall.ENOSYS
	}
	return nil, nil, syscall.ENOSYS
}

// fireLocked sends an event for path to every matching watch of every
// connection. Preconditions: s.mu is held.
func (s *Server) fireLocked(path string, exact bool) {
	abs, ok := resolve(path)
	if !ok {
		return
	}
	for c := range s.conns {
		for _, w := range c.watches {
			wabs, _ := resolve(w.path)
			match := wabs == abs ||
				(!exact && abs[0] == '/' && (wabs == "/" || strings.HasPrefix(abs, wabs+"/")))
			if !match {
				continue
			}
			ep := abs
			if w.path[0] != '/' && w.path[0] != '@' {
				ep = strings.TrimPrefix(abs, home+"/")
			}
			c.send(wire.WatchEvent(ep, w.token))
		}
	}
}

// resolve makes p absolute and checks it as Xen does.
func resolve(p string) (string, bool) {
	if p == "" {
		return "", false
	}
	if p[0] == '@' {
		return p, true
	}
	if p[0] != '/' {
		p = home + "/" + p
	}
	if p != "/" && (strings.HasSuffix(p, "/") || strings.Contains(p, "//")) {
		return "", false
	}
	for _, ch := range p {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.ContainsRune("-/_@", ch)) {
			return "", false
		}
	}
	return p, true
}

func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func base(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func clone(t map[string]*node) map[string]*node {
	c := make(map[string]*node, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}

func cloneNode(n *node) *node {
	c := *n
	c.children = append([]string(nil), n.children...)
	return &c
}

// mkdirAll creates p and its missing ancestors in t (which it may modify),
// each inheriting its parent's permissions.
func mkdirAll(t map[string]*node, p string) map[string]*node {
	if t[p] != nil {
		t[p] = cloneNode(t[p])
		return t
	}
	pp := parent(p)
	t = mkdirAll(t, pp)
	t[pp].children = append(t[pp].children, base(p))
	t[p] = &node{perms: append([]string(nil), t[pp].perms...)}
	return t
}

func remove(l []string, s string) []string {
	for i, x := range l {
		if x == s {
			return append(l[:i:i], l[i+1:]...)
		}
	}
	return l
}
