package xenstore

import (
	"strconv"
	"testing"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// BenchmarkStartDomain measures the core alone on the toolstack workload:
// one transaction writing a domain's keys, then one removing them.
func BenchmarkStartDomain(b *testing.B) {
	e := NewEngine(NewState(DefaultQuota()))
	e.Open(1, 0)
	req := func(typ, tx uint32, p []byte) wire.Msg {
		ds := e.Handle(1, wire.Msg{Type: typ, TxID: tx, Payload: p})
		return ds[len(ds)-1].Msg
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		home := "/local/domain/" + strconv.Itoa(i%1000+1)
		r := req(abi.XS_TRANSACTION_START, 0, []byte{0})
		tx, _ := strconv.Atoi(string(r.Payload[:len(r.Payload)-1]))
		for k := 0; k < 18; k++ {
			req(abi.XS_WRITE, uint32(tx), append([]byte(home+"/key"+strconv.Itoa(k)+"\x00"), "value"...))
		}
		req(abi.XS_TRANSACTION_END, uint32(tx), []byte("T\x00"))
		req(abi.XS_RM, 0, wire.JoinStrings(home))
	}
}
