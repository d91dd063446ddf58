package abi

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestGrantEntryV1Layout(t *testing.T) {
	e := GrantEntryV1{Flags: GTF_permit_access | GTF_readonly, Domid: 7, Frame: 0x01020304}
	b := make([]byte, GrantEntryV1Size)
	e.Encode(b)
	if got := hex.EncodeToString(b); got != "0500070004030201" {
		t.Errorf("entry = %s", got)
	}
	back, err := DecodeGrantEntryV1(b)
	if err != nil || back != e {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	if _, err := DecodeGrantEntryV1(b[:7]); err == nil {
		t.Error("short entry decoded")
	}
}

func TestGNTSTString(t *testing.T) {
	for st, want := range map[int16]string{
		GNTST_okay:         "okay",
		GNTST_bad_copy_arg: "copy arguments cross page boundary",
		GNTST_no_space:     "out of space",
		-14:                "unknown grant status",
		1:                  "unknown grant status",
	} {
		if got := GNTSTString(st); got != want {
			t.Errorf("GNTSTString(%d) = %q, want %q", st, got, want)
		}
	}
}

func FuzzDecodeGrantEntryV1(f *testing.F) {
	f.Add([]byte{1, 0, 2, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeGrantEntryV1(b)
		if err != nil {
			return
		}
		out := make([]byte, GrantEntryV1Size)
		e.Encode(out)
		if !bytes.Equal(out, b[:GrantEntryV1Size]) {
			t.Fatalf("re-encode %x != %x", out, b[:GrantEntryV1Size])
		}
	})
}
