package hypercall

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLayout(t *testing.T) {
	m := Msg{ID: 1, Op: OpGnttabMap, Flags: 4, Errno: 13, Status: -8, Dom: 7, Port: 2, Ref: 9,
		Handle: 3, Frame: 11, Arg: [4]uint32{5, 6, 7, 8}, Data: []byte("xy")}
	b := m.Append(nil)
	want := "01000000" + "1200" + "0400" + "0d000000" + "f8ff" + "0700" +
		"02000000" + "09000000" + "03000000" + "0b000000" +
		"05000000" + "06000000" + "07000000" + "08000000" + "7879"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("encoding\n%s, want\n%s", got, want)
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m, back); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func TestDecodeBounds(t *testing.T) {
	for _, n := range []int{0, 1, HeaderSize - 1, MaxMsg + 1} {
		if _, err := Decode(make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
	for _, n := range []int{HeaderSize, MaxMsg} {
		if _, err := Decode(make([]byte, n)); err != nil {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

// FuzzDecode: any bytes decode or fail cleanly, and what decodes encodes
// back to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add((&Msg{ID: 1, Op: OpHello}).Append(nil))
	f.Add((&Msg{ID: 2, Op: OpGnttabCopy, Data: make([]byte, 40)}).Append(nil))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if got := m.Append(nil); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", got, b)
		}
		_ = m.Op.String()
	})
}
