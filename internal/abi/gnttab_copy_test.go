package abi

import (
	"encoding/hex"
	"testing"
)

func TestGnttabCopyLayout(t *testing.T) {
	c := GnttabCopy{
		Source: GnttabCopyPtr{U: 9, Domid: 3, Offset: 0x10},
		Dest:   GnttabCopyPtr{U: 0x0102030405060708, Domid: DOMID_SELF, Offset: 0x20},
		Len:    100, Flags: GNTCOPY_source_gref, Status: GNTST_bad_copy_arg,
	}
	b := make([]byte, GnttabCopySize)
	c.Encode(b)
	want := "0900000000000000" + "0300" + "1000" + "00000000" +
		"0807060504030201" + "f07f" + "2000" + "00000000" +
		"6400" + "0100" + "f6ff" + "0000"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("gnttab_copy =\n%s, want\n%s", got, want)
	}
	back, err := DecodeGnttabCopy(b)
	if err != nil || back != c {
		t.Fatalf("round trip %+v %v", back, err)
	}
	if _, err := DecodeGnttabCopy(b[:39]); err == nil {
		t.Fatal("short copy decoded")
	}
}

// FuzzDecodeGnttabCopy: a domain's gnttab_copy decodes or fails cleanly
// and re-encodes to the same bytes (padding aside).
func FuzzDecodeGnttabCopy(f *testing.F) {
	f.Add(make([]byte, GnttabCopySize))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeGnttabCopy(b)
		if err != nil {
			return
		}
		out := make([]byte, GnttabCopySize)
		c.Encode(out)
		back, err := DecodeGnttabCopy(out)
		if err != nil || back != c {
			t.Fatalf("round trip %+v -> %+v", c, back)
		}
	})
}
