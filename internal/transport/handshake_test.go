package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

type acceptResult struct {
	kind byte
	name string
	err  error
}

// handshakePair runs both sides of the handshake over a net.Pipe.
func handshakePair(dialKey, acceptKey []byte, kind byte) (dialErr error, acc acceptResult) {
	d, a := net.Pipe()
	done := make(chan acceptResult, 1)
	go func() {
		k, n, err := acceptHandshake(a, acceptKey)
		a.Close()
		done <- acceptResult{k, n, err}
	}()
	dialErr = dialHandshake(d, dialKey, kind, "host-a")
	d.Close()
	return dialErr, <-done
}

func TestHandshake(t *testing.T) {
	k1, k2 := []byte("cluster key one"), []byte("cluster key two")
	for _, tc := range []struct {
		name               string
		dialKey, acceptKey []byte
		dialAuth           bool // the dialer fails with ErrAuth
		acceptAuth         bool // the acceptor fails with ErrAuth
	}{
		{name: "keyless", dialKey: nil, acceptKey: nil},
		{name: "same key", dialKey: k1, acceptKey: k1},
		{name: "different keys", dialKey: k1, acceptKey: k2, dialAuth: true, acceptAuth: true},
		// A keyless acceptor trusts its network, so only the dialer
		// (which wants proof) refuses.
		{name: "keyless acceptor", dialKey: k1, acceptKey: nil, dialAuth: true},
		{name: "keyless dialer", dialKey: nil, acceptKey: k1, dialAuth: true, acceptAuth: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kind := range []byte{connControl, connLink} {
				dErr, acc := handshakePair(tc.dialKey, tc.acceptKey, kind)
				if got := errors.Is(dErr, ErrAuth); got != tc.dialAuth || (!tc.dialAuth && dErr != nil) {
					t.Errorf("kind %d: dialer: %v (want ErrAuth: %v)", kind, dErr, tc.dialAuth)
				}
				if got := errors.Is(acc.err, ErrAuth); got != tc.acceptAuth {
					t.Errorf("kind %d: acceptor: %v (want ErrAuth: %v)", kind, acc.err, tc.acceptAuth)
				}
				if !tc.dialAuth && !tc.acceptAuth && (acc.err != nil || acc.kind != kind || acc.name != "host-a") {
					t.Errorf("kind %d: acceptor got kind %d, name %q, %v", kind, acc.kind, acc.name, acc.err)
				}
			}
		})
	}
}

// TestHandshakeBindsKind: a keyed acceptor refuses a dialer whose MAC was
// made for another kind, so a control handshake cannot become a link.
func TestHandshakeBindsKind(t *testing.T) {
	key := []byte("k")
	d, a := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, _, err := acceptHandshake(a, key)
		a.Close()
		done <- err
	}()
	// Announce a link but MAC as control: replay dialHandshake by hand.
	nd := make([]byte, nonceSize)
	msg := append([]byte(preface), connLink, 1, 'x')
	d.Write(append(msg, nd...))
	reply := make([]byte, nonceSize+macSize)
	io.ReadFull(d, reply)
	macD := mac(key, "shi dialer", []byte{connControl}, reply[:nonceSize], nd, []byte("x"))
	d.Write(macD[:])
	var res [1]byte
	io.ReadFull(d, res[:])
	d.Close()
	if err := <-done; !errors.Is(err, ErrAuth) || res[0] != resultAuthFailed {
		t.Fatalf("acceptor: %v, result %d; want ErrAuth and result %d", err, res[0], resultAuthFailed)
	}
}

func TestAcceptHandshakeMalformed(t *testing.T) {
	valid := append(append([]byte(preface), connControl, 1, 'x'), make([]byte, nonceSize)...)
	for name, b := range map[string][]byte{
		"http":      []byte("GET / HTTP/1.1\r\n\r\n"),
		"kind 0":    append(append([]byte(preface), 0, 1, 'x'), make([]byte, nonceSize)...),
		"kind 3":    append(append([]byte(preface), 3, 1, 'x'), make([]byte, nonceSize)...),
		"no name":   append(append([]byte(preface), connControl, 0), make([]byte, nonceSize)...),
		"long name": append(append([]byte(preface), connControl, MaxName+1), make([]byte, MaxName+1+nonceSize)...),
	} {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b), io.Discard}
		if _, _, err := acceptHandshake(rw, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	for n := range len(valid) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(valid[:n]), io.Discard}
		if _, _, err := acceptHandshake(rw, nil); err == nil {
			t.Errorf("truncated to %d bytes: accepted", n)
		}
	}
}

func TestHello(t *testing.T) {
	for _, n := range []int{0, 1, MaxHello} {
		var b bytes.Buffer
		hello := bytes.Repeat([]byte{7}, n)
		if err := writeHello(&b, hello); err != nil {
			t.Fatal(err)
		}
		got, err := readHello(&b)
		if err != nil || !bytes.Equal(got, hello) {
			t.Errorf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := readHello(bytes.NewReader([]byte{0xff, 0xff})); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversize hello: %v, want ErrMalformed", err)
	}
}

// FuzzAcceptHandshake feeds arbitrary dialer bytes to the acceptor's side
// of the handshake, and what follows to readHello: no panics, and what is
// accepted is well-formed. With a key nothing can be accepted (the MAC
// covers the acceptor's fresh nonce).
func FuzzAcceptHandshake(f *testing.F) {
	valid := append(append([]byte(preface), connLink, 3, 'a', 'b', 'c'), make([]byte, nonceSize+macSize)...)
	f.Add(append(valid, 2, 0, 'h', 'i'))
	f.Add(valid)
	f.Add([]byte("SHI1\x01\x40"))
	f.Add([]byte("GET / HTTP/1.0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, key := range [][]byte{nil, []byte("key")} {
			r := bytes.NewReader(b)
			rw := struct {
				io.Reader
				io.Writer
			}{r, io.Discard}
			kind, name, err := acceptHandshake(rw, key)
			if err != nil {
				continue
			}
			if key != nil {
				t.Fatalf("keyed acceptor accepted %q", b)
			}
			if (kind != connControl && kind != connLink) || len(name) == 0 || len(name) > MaxName {
				t.Fatalf("accepted kind %d, name %q", kind, name)
			}
			if hello, err := readHello(r); err == nil && len(hello) > MaxHello {
				t.Fatalf("hello of %d bytes", len(hello))
			}
		}
	})
}
