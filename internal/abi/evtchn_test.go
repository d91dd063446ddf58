package abi

import (
	"encoding/hex"
	"testing"
)

func TestEvtchnStatusLayout(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    EvtchnStatus
		hex  string
	}{
		{"unbound", EvtchnStatus{Dom: 1, Port: 2, Status: EVTCHNSTAT_unbound, RemoteDom: 5},
			"0100000002000000010000000000000005000000" + "00000000"},
		{"interdomain", EvtchnStatus{Dom: 1, Port: 2, Status: EVTCHNSTAT_interdomain, VCPU: 1, RemoteDom: 5, RemotePort: 9},
			"0100000002000000020000000100000005000000" + "09000000"},
		{"virq", EvtchnStatus{Dom: DOMID_SELF, Port: 3, Status: EVTCHNSTAT_virq, Num: VIRQ_CONSOLE},
			"f07f000003000000040000000000000002000000" + "00000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := make([]byte, EvtchnStatusSize)
			tc.s.Encode(b)
			if got := hex.EncodeToString(b); got != tc.hex {
				t.Errorf("encode = %s, want %s", got, tc.hex)
			}
			back, err := DecodeEvtchnStatus(b)
			if err != nil || back != tc.s {
				t.Errorf("decode = %+v, %v", back, err)
			}
		})
	}
}

func FuzzDecodeEvtchnStatus(f *testing.F) {
	f.Add(make([]byte, EvtchnStatusSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeEvtchnStatus(b)
		if err != nil {
			return
		}
		out := make([]byte, EvtchnStatusSize)
		s.Encode(out)
		again, err := DecodeEvtchnStatus(out)
		if err != nil || again != s {
			t.Fatalf("re-decode %+v != %+v (%v)", again, s, err)
		}
	})
}
