package wire

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shi/internal/abi"
)

func TestReadObservedClientBytes(t *testing.T) {
	// spec/xen-abi.md §1.12: xenstore-read /local/domain/0/name.
	raw := []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15, 0, 0, 0}
	raw = append(raw, "/local/domain/0/name\x00"...)
	m, err := Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != abi.XS_READ || len(m.Payload) != 21 {
		t.Fatalf("got %v", m)
	}
	if got := m.Bytes(); !bytes.Equal(got, raw) {
		t.Fatalf("re-encode: %x", got)
	}
}

func TestReadErrors(t *testing.T) {
	long := (&Msg{Type: 2}).Bytes()
	long[12], long[13] = 0x01, 0x10 // 4097
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 2, 3}, ErrTruncated},
		{"too long", long, ErrTooLong},
		{"short payload", (&Msg{Type: 2, Payload: []byte("abc")}).Bytes()[:17], ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Read(bytes.NewReader(tc.in)); err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"a\x00", []string{"a"}, false},
		{"a\x00\x00b\x00", []string{"a", "", "b"}, false},
		{"a\x00b", nil, true},
	} {
		got, err := Strings([]byte(tc.in))
		if (err != nil) != tc.wantErr || !cmp.Equal(got, tc.want) {
			t.Errorf("Strings(%q) = %q, %v", tc.in, got, err)
		}
	}
	if _, err := String([]byte("a\x00b\x00")); err == nil {
		t.Error("String accepted two strings")
	}
	p, v, err := PathValue([]byte("/a\x00v\x00w"))
	if err != nil || p != "/a" || string(v) != "v\x00w" {
		t.Errorf("PathValue = %q %q %v", p, v, err)
	}
}

func TestErrorReply(t *testing.T) {
	m := ErrorReply(Msg{Type: abi.XS_READ, ReqID: 7, TxID: 3}, 2)
	if m.Type != abi.XS_ERROR || m.ReqID != 7 || m.TxID != 3 || string(m.Payload) != "ENOENT\x00" {
		t.Fatalf("got %v", m)
	}
}

// FuzzDecode checks that arbitrary bytes never panic the decoder and that
// whatever it accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add((&Msg{Type: abi.XS_WRITE, Payload: []byte("/a\x00b")}).Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, rest, err := Decode(b)
		if err != nil {
			return
		}
		if len(m.Payload) > abi.XENSTORE_PAYLOAD_MAX {
			t.Fatal("accepted oversized payload")
		}
		if !bytes.Equal(append(m.Bytes(), rest...), b) {
			t.Fatal("round trip differs")
		}
		m2, err := Read(bytes.NewReader(b))
		if err != nil || !cmp.Equal(m, m2) {
			t.Fatalf("Read disagrees with Decode: %v %v", m2, err)
		}
		Strings(m.Payload)
		PathValue(m.Payload)
	})
}
