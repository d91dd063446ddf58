// Package xenstoretest runs scripted XenStore sessions against the pure
// core, for datadriven tests (testdata/*.txt). Each command sends one
// request on a connection and prints every delivery it caused, so a script
// shows replies and watch events in the order clients would see them.
//
//	conn 1 dom=5           open connection 1 acting as domain 5 (default 0)
//	close 1
//	write 1 /a value [tx=N]   read, mkdir, rm, dir, getperms, dirpart PATH OFF,
//	setperms 1 /a n0 r5       getdomainpath 1 7, isintroduced 1 7,
//	start 1 / commit 1 tx=N / abort 1 tx=N
//	watch 1 /a tok / unwatch 1 /a tok / resetwatches 1
//	introduce 1 7 / release 1 7 / settarget 1 7 8 / resume 1 7
//	control 1 check
//	raw 1 TYPE TX 'payload with \x00 escapes'
//	dump [/path]   check   quota key=value...
package xenstoretest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/datadriven"

	"shi/internal/abi"
	"shi/internal/xenstore"
	"shi/internal/xenstore/wire"
)

// Env is a script's engine and connections.
type Env struct {
	E *xenstore.Engine
}

// New returns an environment with a fresh store.
func New(q xenstore.Quota) *Env {
	return &Env{E: xenstore.NewEngine(xenstore.NewState(q))}
}

var types = map[string]uint32{
	"read": abi.XS_READ, "write": abi.XS_WRITE, "mkdir": abi.XS_MKDIR, "rm": abi.XS_RM,
	"dir": abi.XS_DIRECTORY, "getperms": abi.XS_GET_PERMS, "setperms": abi.XS_SET_PERMS,
	"dirpart": abi.XS_DIRECTORY_PART, "start": abi.XS_TRANSACTION_START,
	"watch": abi.XS_WATCH, "unwatch": abi.XS_UNWATCH, "resetwatches": abi.XS_RESET_WATCHES,
	"getdomainpath": abi.XS_GET_DOMAIN_PATH, "isintroduced": abi.XS_IS_DOMAIN_INTRODUCED,
	"introduce": abi.XS_INTRODUCE, "release": abi.XS_RELEASE, "settarget": abi.XS_SET_TARGET,
	"resume": abi.XS_RESUME, "control": abi.XS_CONTROL,
}

// Handle runs one datadriven command and returns its output.
func (env *Env) Handle(d *datadriven.TestData) string {
	args := d.CmdArgs
	pos := []string{}
	kv := map[string]string{}
	for _, a := range args {
		if len(a.Vals) > 0 {
			kv[a.Key] = a.Vals[0]
		} else {
			pos = append(pos, a.Key)
		}
	}
	switch d.Cmd {
	case "dump":
		from := "/"
		if len(pos) > 0 {
			from = pos[0]
		}
		return env.E.State().Dump(from)
	case "check":
		if err := env.E.State().Check(); err != nil {
			return "error: " + err.Error() + "\n"
		}
		return "ok\n"
	case "conn":
		dom, _ := strconv.Atoi(kv["dom"])
		env.E.Open(connID(pos[0]), uint32(dom))
		return ""
	case "close":
		env.E.Close(connID(pos[0]))
		return ""
	}
	if len(pos) == 0 {
		d.Fatalf(nil, "%s: missing connection", d.Cmd)
	}
	id := connID(pos[0])
	rest := pos[1:]
	m := wire.Msg{}
	if tx, ok := kv["tx"]; ok {
		v, _ := strconv.Atoi(tx)
		m.TxID = uint32(v)
	}
	switch d.Cmd {
	case "raw":
		t, _ := strconv.Atoi(rest[0])
		tx, _ := strconv.Atoi(rest[1])
		p, err := strconv.Unquote(`"` + strings.Trim(rest[2], "'") + `"`)
		if err != nil {
			d.Fatalf(nil, "raw payload: %v", err)
		}
		m.Type, m.TxID, m.Payload = uint32(t), uint32(tx), []byte(p)
	case "commit", "abort":
		m.Type = abi.XS_TRANSACTION_END
		m.Payload = wire.JoinStrings(map[string]string{"commit": "T", "abort": "F"}[d.Cmd])
	case "write":
		m.Type = abi.XS_WRITE
		v := ""
		if len(rest) > 1 {
			v = rest[1]
		}
		if d.Input != "" {
			v = d.Input
		}
		m.Payload = append(append([]byte(rest[0]), 0), v...)
	case "start":
		m.Type = abi.XS_TRANSACTION_START
		m.Payload = []byte{0}
	case "introduce":
		m.Type = abi.XS_INTRODUCE
		m.Payload = wire.JoinStrings(rest[0], "0", "1")
	default:
		t, ok := types[d.Cmd]
		if !ok {
			d.Fatalf(nil, "unknown command %q", d.Cmd)
		}
		m.Type = t
		m.Payload = wire.JoinStrings(rest...)
		if len(rest) == 0 {
			m.Payload = []byte{0}
		}
	}
	var b strings.Builder
	for _, dl := range env.E.Handle(id, m) {
		fmt.Fprintf(&b, "c%d <- %s\n", dl.Conn, Format(dl.Msg))
	}
	return b.String()
}

func connID(s string) xenstore.ConnID {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic("bad connection id " + s)
	}
	return xenstore.ConnID(v)
}

// Format renders a reply or event compactly: errors by name, events as
// "event PATH TOKEN", string lists in brackets, other payloads quoted.
func Format(m wire.Msg) string {
	switch m.Type {
	case abi.XS_ERROR:
		return strings.TrimRight(string(m.Payload), "\x00")
	case abi.XS_WATCH_EVENT:
		ss, _ := wire.Strings(m.Payload)
		return "event " + strings.Join(ss, " ")
	case abi.XS_READ:
		return strconv.Quote(string(m.Payload))
	case abi.XS_DIRECTORY, abi.XS_GET_PERMS, abi.XS_DIRECTORY_PART:
		ss, err := wire.Strings(m.Payload)
		if err != nil {
			return strconv.Quote(string(m.Payload))
		}
		return "[" + strings.Join(ss, " ") + "]"
	}
	s := strings.TrimSuffix(string(m.Payload), "\x00")
	if s == "OK" {
		return "OK"
	}
	return strconv.Quote(s)
}

// SortedLines sorts output lines, for scripts where order does not matter.
func SortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(l)
	return strings.Join(l, "\n") + "\n"
}
