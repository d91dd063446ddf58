package xenstore

import (
	"strconv"
	"syscall"
)

// Op is the kind of a Command.
type Op uint8

// Commands change the replicated state. Every replica applies the same
// commands in the same order and gets the same State and Result.
const (
	OpWrite     Op = iota + 1 // Path, Value
	OpMkdir                   // Path
	OpRm                      // Path
	OpSetPerms                // Path, Perms
	OpTx                      // Obs, Ops: commit a transaction
	OpIntroduce               // Target: the domain introduced
	OpRelease                 // Target: the domain released
	OpSetTarget               // Target: the domain; Value: decimal target domid
	OpSetQuota                // Path: quota name; Value: decimal limit
	opMax
)

var opNames = [...]string{OpWrite: "write", OpMkdir: "mkdir", OpRm: "rm", OpSetPerms: "setperms",
	OpTx: "tx", OpIntroduce: "introduce", OpRelease: "release", OpSetTarget: "settarget", OpSetQuota: "setquota"}

func (o Op) String() string {
	if o > 0 && o < opMax {
		return opNames[o]
	}
	return "op?"
}

// Command is one deterministic change to the store, issued by domain Dom.
type Command struct {
	Op     Op
	Dom    uint32
	Path   string
	Value  []byte
	Perms  Perms
	Target uint32

	Obs []Observation // OpTx: what the transaction saw
	Ops []Command     // OpTx: its changes, in order (no nested OpTx)
}

// Result is the outcome of applying a Command: an errno (0 for success)
// and, on success, the events to fire in order.
type Result struct {
	Err    syscall.Errno
	Events []Event
}

// Apply applies c to s and returns the new state. s itself is unchanged,
// and on failure the returned state is s. Apply is pure and deterministic:
// it is the state machine that the directory replicates.
func (s *State) Apply(c *Command) (*State, Result) {
	x := s.begin(s.Caller(c.Dom), nil)
	var e syscall.Errno
	if c.Op == OpTx {
		e = x.applyTx(c)
	} else {
		e = x.apply(c)
	}
	if e != 0 {
		return s, Result{Err: e}
	}
	return x.commit(), Result{Events: x.events}
}

func (x *change) applyTx(c *Command) syscall.Errno {
	for i := range c.Obs {
		if !c.Obs[i].holds(x.base) {
			return syscall.EAGAIN
		}
	}
	for i := range c.Ops {
		if c.Ops[i].Op == OpTx {
			return syscall.EINVAL
		}
		if e := x.apply(&c.Ops[i]); e != 0 {
			return e
		}
	}
	return 0
}

// apply runs one non-transaction command against the change.
func (x *change) apply(c *Command) syscall.Errno {
	switch c.Op {
	case OpWrite:
		return x.write(c.Path, c.Value)
	case OpMkdir:
		return x.mkdir(c.Path)
	case OpRm:
		return x.rm(c.Path)
	case OpSetPerms:
		return x.setPerms(c.Path, c.Perms)
	case OpIntroduce, OpRelease, OpSetTarget:
		return x.domainOp(c)
	case OpSetQuota:
		if !x.caller.Privileged {
			return syscall.EACCES
		}
		v, err := strconv.Atoi(string(c.Value))
		q := x.meta.quota
		if err != nil || q.Set(c.Path, v) != nil {
			return syscall.EINVAL
		}
		x.writableMeta().quota = q
		return 0
	}
	return syscall.EINVAL
}

func (x *change) domainOp(c *Command) syscall.Errno {
	if !x.caller.Privileged {
		return syscall.EACCES
	}
	d := c.Target
	switch c.Op {
	case OpIntroduce:
		if d >= 0x7FF0 { // DOMID_FIRST_RESERVED
			return syscall.EINVAL
		}
		if x.meta.introduced[d] {
			return 0
		}
		x.writableMeta().introduced[d] = true
		x.events = append(x.events, Event{Path: IntroduceDomain, Perms: x.meta.special[IntroduceDomain]})
	case OpRelease:
		if d == 0 {
			return syscall.EINVAL
		}
		if !x.meta.introduced[d] {
			return syscall.ENOENT
		}
		m := x.writableMeta()
		delete(m.introduced, d)
		delete(m.targets, d)
		x.events = append(x.events, Event{Path: ReleaseDomain, Perms: x.meta.special[ReleaseDomain]})
	case OpSetTarget:
		t, ok := parseDomid(string(c.Value))
		if !ok {
			return syscall.EINVAL
		}
		if !x.meta.introduced[d] || !x.meta.introduced[t] {
			return syscall.ENOENT
		}
		x.writableMeta().targets[d] = t
	}
	return 0
}

// parseDomid parses a decimal domid 0..65535.
func parseDomid(s string) (uint32, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + uint32(s[i]-'0')
	}
	return v, v <= 0xFFFF
}

// CreateOnce returns a transaction command that applies ops only if
// marker does not exist yet (else it fails with EAGAIN). The agent writes
// the cluster's first keys this way, so a later leader never rewrites
// keys a user changed.
func CreateOnce(marker string, ops ...Command) *Command {
	return &Command{Op: OpTx, Obs: []Observation{{Path: marker, Facets: obsExist}}, Ops: ops}
}
