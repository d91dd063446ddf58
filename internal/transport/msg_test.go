package transport

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

// sample is a message with every slot set to a distinct value.
func sample() Msg {
	return Msg{Kind: KindMapResp, Flags: 0x0102, ID: 0x0807060504030201, Errno: 13, Status: -8,
		FromDom: 3, ToDom: 4, FromPort: 5, ToPort: 6, Ref: 7, Frame: 9,
		Arg: [4]uint32{10, 11, 12, 0xdeadbeef}, Data: []byte("xy")}
}

// TestLayout pins the wire layout documented in the package comment.
func TestLayout(t *testing.T) {
	m := sample()
	b := AppendFrame(nil, &m)
	want := "3a000000" + // length of the rest: 56 + 2
		"08" + "00" + "0201" + "0d000000" + // kind, reserved, flags, errno
		"0102030405060708" + // id
		"f8ff" + "0300" + "0400" + "0000" + // status, fromdom, todom, reserved
		"05000000" + "06000000" + "07000000" + "09000000" + // fromport, toport, ref, frame
		"0a000000" + "0b000000" + "0c000000" + "efbeadde" + // arg
		"7879"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding\n%s, want\n%s", got, want)
	}
	if len(b) != FrameSize(&m) {
		t.Fatalf("FrameSize %d, encoded %d", FrameSize(&m), len(b))
	}
	back, err := DecodeFrame(b[prefixSize:])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, back) {
		t.Fatalf("round trip: got %+v, want %+v", back, m)
	}
}

func TestDecodeBounds(t *testing.T) {
	for _, n := range []int{0, 1, HeaderSize - 1, HeaderSize + MaxData + 1} {
		if _, err := DecodeFrame(make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v, want ErrMalformed", n, err)
		}
	}
	for _, n := range []int{HeaderSize, HeaderSize + MaxData} {
		m, err := DecodeFrame(make([]byte, n))
		if err != nil {
			t.Errorf("%d bytes: %v", n, err)
		}
		if len(m.Data) != n-HeaderSize {
			t.Errorf("%d bytes: %d bytes of data", n, len(m.Data))
		}
	}
	for _, off := range []int{1, 22, 23} {
		b := make([]byte, HeaderSize)
		b[off] = 1
		if _, err := DecodeFrame(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("reserved byte %d set: %v, want ErrMalformed", off, err)
		}
	}
}

// TestUnknownKindDecodes: a kind this version does not know is carried,
// not refused, so a newer peer's message reaches the handler.
func TestUnknownKindDecodes(t *testing.T) {
	m := Msg{Kind: 200, ID: 1}
	got, err := DecodeFrame(AppendFrame(nil, &m)[prefixSize:])
	if err != nil || got.Kind != 200 {
		t.Fatalf("got %v, %v", got.Kind, err)
	}
	if s := got.Kind.String(); s != "kind200" {
		t.Fatalf("String() = %q", s)
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for k := KindBindReq; k <= KindDomainGone; k++ {
		s := k.String()
		if s == "" || seen[s] || s[:4] == "kind" {
			t.Errorf("kind %d has name %q", k, s)
		}
		seen[s] = true
	}
	if KindBindReq != 1 || KindDomainGone != 13 {
		t.Fatal("kind numbers moved; they are part of the wire format")
	}
	if s := Kind(0).String(); s != "kind0" {
		t.Errorf("Kind(0).String() = %q", s)
	}
}

func TestAppendFrameRefusesOversize(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("AppendFrame accepted MaxData+1 bytes")
		}
	}()
	AppendFrame(nil, &Msg{Data: make([]byte, MaxData+1)})
}

// FuzzDecodeFrame: any bytes decode or fail cleanly, and what decodes
// re-encodes to the same bytes.
func FuzzDecodeFrame(f *testing.F) {
	m := sample()
	f.Add(AppendFrame(nil, &m)[prefixSize:])
	f.Add(AppendFrame(nil, &Msg{Kind: KindMapResp, Data: make([]byte, 4096)})[prefixSize:])
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		got := AppendFrame(nil, &m)
		if int(uint32(len(b))) != len(got)-prefixSize || !bytes.Equal(got[prefixSize:], b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", got[prefixSize:], b)
		}
		_ = m.Kind.String()
	})
}
