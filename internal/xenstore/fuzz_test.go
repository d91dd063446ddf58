package xenstore

import (
	"bytes"
	"strconv"
	"testing"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

var fuzzPaths = []string{"/", "/a", "/a/b", "/a/b/c", "/a/d", "/local/domain/5", "/local/domain/5/x",
	"rel", "rel/y", "@releaseDomain", "@introduceDomain", "/bad//p", "", "/z"}

// FuzzEngine drives the engine with random request sequences from three
// connections (two of dom0, one of dom5) and checks after every step that
// the tree's invariants hold, that the requester got exactly one reply,
// and at the end that replaying the applied commands on a fresh store
// gives the same tree: the determinism replication depends on.
func FuzzEngine(f *testing.F) {
	f.Add([]byte{0, abi.XS_WRITE, 0, 1, 3, 1, abi.XS_WATCH, 0, 0, 0, 0, abi.XS_RM, 0, 1, 0})
	f.Add([]byte{0, abi.XS_TRANSACTION_START, 0, 0, 0, 0, abi.XS_WRITE, 1, 2, 1, 0, abi.XS_TRANSACTION_END, 1, 0, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		q := DefaultQuota()
		q.MaxNodes, q.MaxWatches, q.MaxTransactions, q.MaxTxNodes = 8, 3, 2, 10
		e := NewEngine(NewState(q))
		doms := []uint32{0, 0, 5}
		for i, d := range doms {
			e.Open(ConnID(i), d)
		}
		var log [][]byte
		for len(prog) >= 5 {
			id := ConnID(prog[0] % 3)
			typ := uint32(prog[1] % (abi.XS_TYPE_COUNT + 1))
			txid := uint32(prog[2] % 4)
			path := fuzzPaths[int(prog[3])%len(fuzzPaths)]
			arg := prog[4]
			prog = prog[5:]
			m := wire.Msg{Type: typ, TxID: txid, Payload: payload(typ, path, arg)}
			out, cmd := e.Request(id, m)
			if cmd != nil {
				b, _ := cmd.MarshalBinary()
				log = append(log, b)
				s, res := e.State().Apply(cmd)
				out = append(out, e.Applied(s, res)...)
				out = append(out, Delivery{Conn: id, Msg: CompleteReply(m, res)})
			}
			replies := 0
			for _, d := range out {
				if !d.Event && d.Conn == id {
					replies++
				}
				if d.Event && d.Msg.Type != abi.XS_WATCH_EVENT {
					t.Fatalf("event delivery of type %d", d.Msg.Type)
				}
			}
			if replies != 1 {
				t.Fatalf("%v: %d replies", m, replies)
			}
			if err := e.State().Check(); err != nil {
				t.Fatalf("after %v: %v", m, err)
			}
		}
		r := NewState(q)
		for _, b := range log {
			var c Command
			if err := c.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			r, _ = r.Apply(&c)
		}
		if r.Dump("/") != e.State().Dump("/") || r.Generation() != e.State().Generation() {
			t.Fatalf("replay differs:\n%s\nvs\n%s", r.Dump("/"), e.State().Dump("/"))
		}
	})
}

func payload(typ uint32, path string, arg byte) []byte {
	switch typ {
	case abi.XS_WRITE:
		return append(append([]byte(path), 0), bytes.Repeat([]byte{'v'}, int(arg)%40)...)
	case abi.XS_SET_PERMS:
		return wire.JoinStrings(path, "bnrw"[arg%4:arg%4+1]+strconv.Itoa(int(arg>>2)%7), "r5")
	case abi.XS_WATCH, abi.XS_UNWATCH:
		return wire.JoinStrings(path, "t"+strconv.Itoa(int(arg%3)))
	case abi.XS_TRANSACTION_END:
		return wire.JoinStrings([]string{"T", "F", "X"}[arg%3])
	case abi.XS_DIRECTORY_PART:
		return wire.JoinStrings(path, strconv.Itoa(int(arg)))
	case abi.XS_INTRODUCE:
		return wire.JoinStrings(strconv.Itoa(int(arg%10)), "0", strconv.Itoa(int(arg%2)))
	case abi.XS_RELEASE, abi.XS_IS_DOMAIN_INTRODUCED, abi.XS_RESUME, abi.XS_GET_DOMAIN_PATH:
		return wire.JoinStrings(strconv.Itoa(int(arg % 10)))
	case abi.XS_SET_TARGET:
		return wire.JoinStrings(strconv.Itoa(int(arg%10)), strconv.Itoa(int(arg/10%10)))
	case abi.XS_CONTROL:
		return wire.JoinStrings([]string{"check", "quota", "help", "nope"}[arg%4])
	}
	if arg%17 == 0 {
		return []byte(path) // no NUL terminator
	}
	return wire.JoinStrings(path)
}
