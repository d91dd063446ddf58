package xenstore

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// ConnID names a client connection of one replica.
type ConnID uint64

// Delivery is a message for a connection: a reply, or a watch event
// (Event set), which the connection may drop under its event quota.
type Delivery struct {
	Conn  ConnID
	Msg   wire.Msg
	Event bool
}

// Engine is one replica's view of XenStore clients: their connections,
// transactions and watches, over the replicated State. It is pure: a
// request goes in, deliveries and at most one Command to replicate come
// out. The caller serialises calls.
type Engine struct {
	state   *State
	conns   map[ConnID]*conn
	watches map[string][]*watch // by absolute path or special name
	domW    map[uint32]int      // watches per domain
	seq     uint64              // registration order of watches
}

type conn struct {
	id      ConnID
	dom     uint32
	home    string
	txs     map[uint32]*tx
	nextTx  uint32
	watches []*watch
}

type tx struct {
	view *State // snapshot at start plus the transaction's own changes
	obs  *observer
	ops  []Command
}

type watch struct {
	c     *conn
	path  string // absolute, or @special
	token string
	rel   int // bytes to strip from event paths (relative watch), else 0
	seq   uint64
}

// NewEngine returns an engine over s.
func NewEngine(s *State) *Engine {
	return &Engine{state: s, conns: map[ConnID]*conn{}, watches: map[string][]*watch{}, domW: map[uint32]int{}}
}

// State returns the current state.
func (e *Engine) State() *State { return e.state }

// Open registers a connection acting as domain dom (0 for socket clients).
func (e *Engine) Open(id ConnID, dom uint32) {
	e.conns[id] = &conn{id: id, dom: dom, home: HomePath(dom), txs: map[uint32]*tx{}}
}

// Close forgets a connection with its watches and transactions.
func (e *Engine) Close(id ConnID) {
	c := e.conns[id]
	if c == nil {
		return
	}
	e.dropWatches(c)
	delete(e.conns, id)
}

// Conns is the number of open connections.
func (e *Engine) Conns() int { return len(e.conns) }

// Handle runs a request to completion on a store that is not replicated:
// a command is applied at once. Deliveries come out in the order to send.
func (e *Engine) Handle(id ConnID, m wire.Msg) []Delivery {
	out, cmd := e.Request(id, m)
	if cmd != nil {
		s, res := e.state.Apply(cmd)
		out = append(out, e.Applied(s, res)...)
		out = append(out, Delivery{Conn: id, Msg: CompleteReply(m, res)})
	}
	return out
}

// Applied installs a new state after a command was applied (by this
// replica's Handle or by the replicated log) and returns the watch events
// it fires for this replica's connections.
func (e *Engine) Applied(s *State, res Result) []Delivery {
	e.state = s
	if len(res.Events) == 0 || len(e.watches) == 0 {
		return nil
	}
	var out []Delivery
	var hits []*watch
	for _, ev := range res.Events {
		hits = e.match(ev, hits[:0])
		for _, w := range hits {
			if d, ok := e.deliver(w, ev); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

// deliver builds w's event for ev, unless w may not see it or the event
// would not fit in a message (C xenstored drops those too: libxenstore
// would take an over-long message for a broken connection).
func (e *Engine) deliver(w *watch, ev Event) (Delivery, bool) {
	if w.c.dom != 0 && !e.permitted(w.c, ev) {
		return Delivery{}, false
	}
	path := w.report(ev.Path)
	if len(path)+len(w.token)+2 > abi.XENSTORE_PAYLOAD_MAX {
		return Delivery{}, false
	}
	return Delivery{Conn: w.c.id, Msg: wire.WatchEvent(path, w.token), Event: true}, true
}

// Reset installs a state that replaced the old one wholesale (a snapshot
// restored on a lagging replica). What changed is unknown, so every watch
// fires once with its own path, subject to the usual permission check
// (spurious events are allowed; clients re-read).
func (e *Engine) Reset(s *State) []Delivery {
	old := e.state
	e.state = s
	var all []*watch
	for _, ws := range e.watches {
		all = append(all, ws...)
	}
	sortWatches(all)
	var out []Delivery
	for _, w := range all {
		ev := Event{Path: w.path, Exact: true}
		if w.path[0] == '@' {
			ev.Perms = s.meta.special[w.path]
		} else {
			for _, st := range []*State{s, old} {
				if n := st.Get(w.path); n != nil {
					ev.Perms = n.Perms
					break
				}
			}
			if w.path != "/" {
				if p := s.Get(parentOf(w.path)); p != nil {
					ev.ParentPerms = p.Perms
				}
			}
		}
		if d, ok := e.deliver(w, ev); ok {
			out = append(out, d)
		}
	}
	return out
}

// CompleteReply is the reply to a request whose command was applied with
// result res.
func CompleteReply(req wire.Msg, res Result) wire.Msg {
	if res.Err != 0 {
		return wire.ErrorReply(req, res.Err)
	}
	return wire.Reply(req, wire.OK)
}

// txFlag marks the request types whose tx_id selects a transaction.
var txFlag = [abi.XS_TYPE_COUNT]bool{
	abi.XS_DIRECTORY: true, abi.XS_READ: true, abi.XS_GET_PERMS: true,
	abi.XS_TRANSACTION_START: true, abi.XS_TRANSACTION_END: true,
	abi.XS_GET_DOMAIN_PATH: true, abi.XS_WRITE: true, abi.XS_MKDIR: true,
	abi.XS_RM: true, abi.XS_SET_PERMS: true, abi.XS_DIRECTORY_PART: true,
}

// privFlag marks request types only privileged callers may send.
var privFlag = [abi.XS_TYPE_COUNT]bool{
	abi.XS_CONTROL: true, abi.XS_INTRODUCE: true, abi.XS_RELEASE: true,
	abi.XS_IS_DOMAIN_INTRODUCED: true, abi.XS_RESUME: true, abi.XS_SET_TARGET: true,
}

// Request handles one request of connection id. It returns the deliveries
// to send now and, for a change of the replicated state, the Command to
// apply; the reply to such a request is CompleteReply once it is applied.
func (e *Engine) Request(id ConnID, m wire.Msg) ([]Delivery, *Command) {
	c := e.conns[id]
	if c == nil {
		return nil, nil
	}
	reply := func(p []byte) []Delivery { return []Delivery{{Conn: id, Msg: wire.Reply(m, p)}} }
	fail := func(errno syscall.Errno) []Delivery { return []Delivery{{Conn: id, Msg: wire.ErrorReply(m, errno)}} }

	if m.Type >= abi.XS_TYPE_COUNT || m.Type == abi.XS_WATCH_EVENT || m.Type == abi.XS_ERROR || m.Type == 20 {
		return fail(syscall.ENOSYS), nil
	}
	caller := e.state.Caller(c.dom)
	if privFlag[m.Type] && !caller.Privileged {
		return fail(syscall.EACCES), nil
	}
	var t *tx
	if txFlag[m.Type] && m.TxID != 0 {
		if t = c.txs[m.TxID]; t == nil {
			return fail(syscall.ENOENT), nil
		}
	}
	p, cmd, errno := e.dispatch(c, caller, t, m)
	switch {
	case errno != 0:
		return fail(errno), nil
	case cmd != nil:
		return nil, cmd
	case m.Type == abi.XS_WATCH:
		return append(reply(wire.OK), e.firstEvent(c, m)), nil
	}
	return reply(p), nil
}

// dispatch returns a reply payload, or a command to replicate, or an errno.
func (e *Engine) dispatch(c *conn, caller Caller, t *tx, m wire.Msg) ([]byte, *Command, syscall.Errno) {
	switch m.Type {
	case abi.XS_READ, abi.XS_DIRECTORY, abi.XS_GET_PERMS:
		path, err := wire.String(m.Payload)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		return e.read(c, caller, t, m.Type, c.abs(path))
	case abi.XS_DIRECTORY_PART:
		return e.directoryPart(c, caller, t, m.Payload)
	case abi.XS_WRITE:
		path, value, err := wire.PathValue(m.Payload)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		return e.change(c, caller, t, &Command{Op: OpWrite, Path: c.abs(path), Value: append([]byte(nil), value...)})
	case abi.XS_MKDIR, abi.XS_RM:
		path, err := wire.String(m.Payload)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		op := OpMkdir
		if m.Type == abi.XS_RM {
			op = OpRm
		}
		return e.change(c, caller, t, &Command{Op: op, Path: c.abs(path)})
	case abi.XS_SET_PERMS:
		ss, err := wire.Strings(m.Payload)
		if err != nil || len(ss) < 2 {
			return nil, nil, syscall.EINVAL
		}
		if !caller.Privileged && len(ss)-1 > e.state.meta.quota.MaxPerms {
			return nil, nil, syscall.ENOSPC
		}
		perms := make(Perms, len(ss)-1)
		for i, s := range ss[1:] {
			if perms[i], err = ParsePerm(s); err != nil {
				return nil, nil, syscall.EINVAL
			}
		}
		return e.change(c, caller, t, &Command{Op: OpSetPerms, Path: c.abs(ss[0]), Perms: perms})
	case abi.XS_TRANSACTION_START:
		return e.txStart(c, caller, t)
	case abi.XS_TRANSACTION_END:
		return e.txEnd(c, t, m)
	case abi.XS_WATCH:
		return nil, nil, e.watch(c, caller, m.Payload)
	case abi.XS_UNWATCH:
		if errno := e.unwatch(c, m.Payload); errno != 0 {
			return nil, nil, errno
		}
		return wire.OK, nil, 0
	case abi.XS_RESET_WATCHES:
		e.dropWatches(c)
		c.txs = map[uint32]*tx{}
		return wire.OK, nil, 0
	case abi.XS_GET_DOMAIN_PATH:
		s, err := wire.String(m.Payload)
		if err != nil {
			return nil, nil, syscall.EINVAL
		}
		return wire.JoinStrings(HomePath(atoi(s))), nil, 0
	case abi.XS_INTRODUCE, abi.XS_RELEASE, abi.XS_RESUME, abi.XS_IS_DOMAIN_INTRODUCED, abi.XS_SET_TARGET:
		return e.domainRequest(m)
	case abi.XS_CONTROL:
		return e.control(m.Payload)
	}
	return nil, nil, syscall.ENOSYS
}

// abs makes a client path absolute: paths not starting with '/' or '@'
// are relative to the connection's home (canonicalize in C xenstored).
func (c *conn) abs(p string) string {
	if p == "" || p[0] == '/' || p[0] == '@' {
		return p
	}
	return c.home + "/" + p
}

func (e *Engine) read(c *conn, caller Caller, t *tx, typ uint32, path string) ([]byte, *Command, syscall.Errno) {
	if ps, ok := e.state.meta.special[path]; ok && typ == abi.XS_GET_PERMS {
		// The special nodes' permissions can be read like a node's.
		if !caller.can(ps, PermRead) {
			return nil, nil, syscall.EACCES
		}
		return ps.appendWire(nil), nil, 0
	}
	var facet uint8
	switch typ {
	case abi.XS_READ:
		facet = obsValue
	case abi.XS_DIRECTORY:
		facet = obsChildren
	case abi.XS_GET_PERMS:
		facet = obsPerms
	}
	x := e.reader(caller, t)
	n, errno := x.lookup(path, PermRead, facet)
	if errno == 0 {
		errno = e.txQuota(caller, t)
	}
	if errno != 0 {
		return nil, nil, errno
	}
	var p []byte
	switch typ {
	case abi.XS_READ:
		p = n.Value
	case abi.XS_DIRECTORY:
		p = wire.JoinStrings(n.Children...)
	case abi.XS_GET_PERMS:
		p = n.Perms.appendWire(nil)
	}
	if len(p) > abi.XENSTORE_PAYLOAD_MAX {
		return nil, nil, syscall.E2BIG
	}
	return p, nil, 0
}

// reader returns a change used only to look nodes up, in the transaction's
// view when there is one.
func (e *Engine) reader(caller Caller, t *tx) *change {
	if t != nil {
		return t.view.begin(caller, t.obs)
	}
	return e.state.begin(caller, nil)
}

func (e *Engine) txQuota(caller Caller, t *tx) syscall.Errno {
	if t != nil && !caller.Privileged && len(t.obs.seen) > e.state.meta.quota.MaxTxNodes {
		return syscall.ENOSPC
	}
	return 0
}

// directoryPart answers XS_DIRECTORY_PART: the node generation, then as
// many whole child names from the byte offset as fit, then an empty name
// if the list ends in this chunk.
func (e *Engine) directoryPart(c *conn, caller Caller, t *tx, payload []byte) ([]byte, *Command, syscall.Errno) {
	ss, err := wire.Strings(payload)
	if err != nil || len(ss) != 2 {
		return nil, nil, syscall.EINVAL
	}
	x := e.reader(caller, t)
	n, errno := x.lookup(c.abs(ss[0]), PermRead, obsChildren)
	if errno != 0 {
		return nil, nil, errno
	}
	// C xenstored reads the offset with atoi into an unsigned: leading
	// digits only, and a negative number is past any end.
	off := int(atoi(ss[1]))
	if strings.HasPrefix(strings.TrimLeft(ss[1], " \t\n\v\f\r"), "-") {
		off = math.MaxInt32
	}
	all := wire.JoinStrings(n.Children...)
	gen := strconv.FormatUint(n.Gen(), 10)
	out := append([]byte(gen), 0)
	if off >= len(all) {
		return append(out, 0), nil, 0
	}
	maxLen := abi.XENSTORE_PAYLOAD_MAX - len(out) - 1
	end := off
	for end < len(all) {
		i := end
		for all[i] != 0 {
			i++
		}
		if i+1-off > maxLen {
			break
		}
		end = i + 1
	}
	out = append(out, all[off:end]...)
	if end == len(all) {
		out = append(out, 0)
	}
	return out, nil, 0
}

// change handles a modifying request: inside a transaction it is applied
// to the transaction's view at once; outside it becomes a Command.
func (e *Engine) change(c *conn, caller Caller, t *tx, cmd *Command) ([]byte, *Command, syscall.Errno) {
	cmd.Dom = c.dom
	if cmd.Path == "" || cmd.Path[0] != '/' && !(cmd.Op == OpSetPerms && cmd.Path[0] == '@') {
		return nil, nil, syscall.EINVAL
	}
	if cmd.Path[0] == '/' && !validPath(cmd.Path) {
		return nil, nil, syscall.EINVAL
	}
	if t == nil {
		return nil, cmd, 0
	}
	x := t.view.begin(caller, t.obs)
	if errno := x.apply(cmd); errno != 0 {
		return nil, nil, errno
	}
	if errno := e.txQuota(caller, t); errno != 0 {
		return nil, nil, errno
	}
	t.view = x.commit()
	t.ops = append(t.ops, *cmd)
	return wire.OK, nil, 0
}

func (e *Engine) txStart(c *conn, caller Caller, t *tx) ([]byte, *Command, syscall.Errno) {
	if t != nil {
		return nil, nil, syscall.EBUSY
	}
	q := e.state.meta.quota
	if len(c.txs) >= q.MaxConnTx || (!caller.Privileged && len(c.txs) >= q.MaxTransactions) {
		return nil, nil, syscall.ENOSPC
	}
	for {
		c.nextTx++
		if c.nextTx != 0 && c.txs[c.nextTx] == nil {
			break
		}
	}
	c.txs[c.nextTx] = &tx{view: e.state, obs: newObserver(e.state)}
	return wire.JoinStrings(strconv.FormatUint(uint64(c.nextTx), 10)), nil, 0
}

func (e *Engine) txEnd(c *conn, t *tx, m wire.Msg) ([]byte, *Command, syscall.Errno) {
	arg, err := wire.String(m.Payload)
	if err != nil || (arg != "T" && arg != "F") {
		return nil, nil, syscall.EINVAL
	}
	if t == nil {
		return nil, nil, syscall.ENOENT
	}
	delete(c.txs, m.TxID)
	if arg == "F" || len(t.ops) == 0 {
		// Aborted, or read-only: a read-only transaction read one
		// snapshot, so it is serialisable as it stands and never conflicts.
		return wire.OK, nil, 0
	}
	return nil, &Command{Op: OpTx, Dom: c.dom, Obs: t.obs.list(), Ops: t.ops}, 0
}

func (e *Engine) domainRequest(m wire.Msg) ([]byte, *Command, syscall.Errno) {
	ss, err := wire.Strings(m.Payload)
	if err != nil || len(ss) == 0 {
		return nil, nil, syscall.EINVAL
	}
	d, ok := parseDomid(ss[0])
	if !ok {
		return nil, nil, syscall.EINVAL
	}
	switch m.Type {
	case abi.XS_INTRODUCE:
		if len(ss) < 3 {
			return nil, nil, syscall.EINVAL
		}
		if port, err := strconv.ParseUint(ss[2], 10, 32); err != nil || port == 0 {
			return nil, nil, syscall.EINVAL
		}
		return nil, &Command{Op: OpIntroduce, Target: d}, 0
	case abi.XS_RELEASE:
		return nil, &Command{Op: OpRelease, Target: d}, 0
	case abi.XS_SET_TARGET:
		if len(ss) != 2 {
			return nil, nil, syscall.EINVAL
		}
		return nil, &Command{Op: OpSetTarget, Target: d, Value: []byte(ss[1])}, 0
	case abi.XS_RESUME:
		if d == 0 {
			return nil, nil, syscall.EINVAL
		}
		if !e.state.Introduced(d) {
			return nil, nil, syscall.ENOENT
		}
		return wire.OK, nil, 0
	}
	// XS_IS_DOMAIN_INTRODUCED
	if e.state.Introduced(d) {
		return []byte("T\x00"), nil, 0
	}
	return []byte("F\x00"), nil, 0
}

// atoi reads a domid as C's atoi does (leading digits; anything else is
// 0), which XS_GET_DOMAIN_PATH uses in C xenstored.
func atoi(s string) uint32 {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	s = strings.TrimPrefix(s, "+")
	var v uint32
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9' && v < 1<<28; i++ {
		v = v*10 + uint32(s[i]-'0')
	}
	return v
}

// Sort helper shared by watch matching.
func sortWatches(ws []*watch) {
	sort.Slice(ws, func(i, j int) bool { return ws[i].seq < ws[j].seq })
}
