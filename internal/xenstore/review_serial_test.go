package xenstore

import (
	"math/rand"
	"strconv"
	"testing"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// TestReviewCommittedTxIsSerial runs random interleavings of transactions
// and plain changes and checks every transaction that commits: replaying
// its requests, without a transaction, on the state just before the commit
// must give the replies the client saw and the state the commit produced.
// A conflict the commit missed shows up as a differing reply.
func TestReviewCommittedTxIsSerial(t *testing.T) {
	paths := []string{"/a", "/a/b", "/a/c", "/a/b/x", "/d", "/local/domain/5/k"}
	types := []uint32{abi.XS_READ, abi.XS_DIRECTORY, abi.XS_GET_PERMS, abi.XS_WRITE, abi.XS_MKDIR, abi.XS_RM, abi.XS_SET_PERMS}
	doms := []uint32{0, 0, 5}
	for seed := int64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewSource(seed))
		e := NewEngine(NewState(DefaultQuota()))
		for i, d := range doms {
			e.Open(ConnID(i), d)
		}
		e.Handle(0, wire.Msg{Type: abi.XS_WRITE, Payload: []byte("/local/domain/5/k\x00v")})
		e.Handle(0, wire.Msg{Type: abi.XS_SET_PERMS, Payload: wire.JoinStrings("/local/domain/5", "n5")})
		type rec struct {
			m   wire.Msg
			out wire.Msg
		}
		txid := map[ConnID]uint32{}
		hist := map[ConnID][]rec{}
		start := map[ConnID]*State{}
		wrote := map[ConnID]bool{}
		for step := 0; step < 60; step++ {
			id := ConnID(rng.Intn(len(doms)))
			if txid[id] == 0 && rng.Intn(3) == 0 {
				out := e.Handle(id, wire.Msg{Type: abi.XS_TRANSACTION_START, Payload: []byte{0}})
				n, _ := strconv.Atoi(string(out[0].Msg.Payload[:len(out[0].Msg.Payload)-1]))
				txid[id], hist[id], start[id], wrote[id] = uint32(n), nil, e.State(), false
				continue
			}
			if txid[id] != 0 && rng.Intn(5) == 0 {
				before := e.State()
				out := e.Handle(id, wire.Msg{Type: abi.XS_TRANSACTION_END, TxID: txid[id], Payload: wire.JoinStrings("T")})
				reply := out[len(out)-1].Msg
				txid[id] = 0
				if reply.Type == abi.XS_ERROR {
					continue
				}
				// Replay serially at the commit point; a read-only
				// transaction is serialised at its start instead.
				at := before
				if !wrote[id] {
					at = start[id]
				}
				r := NewEngine(at)
				r.Open(99, doms[id])
				for _, h := range hist[id] {
					m := h.m
					m.TxID = 0
					got := r.Handle(99, m)
					g := got[len(got)-1].Msg
					if g.Type != h.out.Type || string(g.Payload) != string(h.out.Payload) {
						t.Fatalf("seed %d: committed tx of conn %d saw %v -> %q, serially %q", seed, id, h.m, h.out.Payload, g.Payload)
					}
				}
				if wrote[id] && r.State().Dump("/") != e.State().Dump("/") {
					t.Fatalf("seed %d: commit state differs from serial replay:\n%s\nvs\n%s", seed, e.State().Dump("/"), r.State().Dump("/"))
				}
				continue
			}
			typ := types[rng.Intn(len(types))]
			p := paths[rng.Intn(len(paths))]
			var pl []byte
			switch typ {
			case abi.XS_WRITE:
				pl = append([]byte(p+"\x00"), byte('0'+rng.Intn(3)))
			case abi.XS_SET_PERMS:
				pl = wire.JoinStrings(p, []string{"n0", "b0", "r0"}[rng.Intn(3)], []string{"r5", "b5", "n5"}[rng.Intn(3)])
			default:
				pl = wire.JoinStrings(p)
			}
			m := wire.Msg{Type: typ, TxID: txid[id], Payload: pl}
			out := e.Handle(id, m)
			var reply wire.Msg
			for _, d := range out {
				if !d.Event && d.Conn == id {
					reply = d.Msg
				}
			}
			if txid[id] != 0 {
				hist[id] = append(hist[id], rec{m, reply})
				if reply.Type != abi.XS_ERROR && typ != abi.XS_READ && typ != abi.XS_DIRECTORY && typ != abi.XS_GET_PERMS {
					wrote[id] = true
				}
			}
		}
	}
}
