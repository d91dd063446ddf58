package xenstore

import (
	"strconv"
	"strings"
	"testing"

	"shi/internal/abi"
	"shi/internal/xenstore/wire"
)

// A watch event's payload is the event path plus the token; the path of
// an event may be far longer than the watched path. C xenstored drops an
// event that would exceed XENSTORE_PAYLOAD_MAX (add_event: "Don't try to
// send over-long events"); libxenstore treats a longer message as a
// broken connection (E2BIG, closes the fd), so sending it kills the
// watcher's handle.
func TestReviewWatchEventNeverExceedsPayloadMax(t *testing.T) {
	e := NewEngine(NewState(DefaultQuota()))
	e.Open(1, 0)
	tok := strings.Repeat("t", 3000)
	if out := e.Handle(1, wire.Msg{Type: abi.XS_WATCH, Payload: wire.JoinStrings("/", tok)}); len(out) != 2 {
		t.Fatalf("watch: %v", out)
	}
	path := "/" + strings.Repeat("p", 2000)
	for _, d := range e.Handle(1, wire.Msg{Type: abi.XS_WRITE, Payload: append([]byte(path+"\x00"), 'v')}) {
		if len(d.Msg.Payload) > abi.XENSTORE_PAYLOAD_MAX {
			t.Errorf("delivery of type %d with a %d-byte payload", d.Msg.Type, len(d.Msg.Payload))
		}
	}
}

// XS_DIRECTORY_PART parses its offset with C's atoi into an unsigned int
// (send_directory_part): "-1" is past the end (reply "<gen>\0\0"), and "2x"
// is 2. strconv.Atoi makes both 0 and returns the list from the start.
func TestReviewDirectoryPartOffsetLikeAtoi(t *testing.T) {
	e := NewEngine(NewState(DefaultQuota()))
	e.Open(1, 0)
	for _, p := range []string{"/d/aa", "/d/bb"} {
		e.Handle(1, wire.Msg{Type: abi.XS_WRITE, Payload: []byte(p + "\x00")})
	}
	gen := strconv.FormatUint(e.State().Get("/d").Gen(), 10)
	for off, want := range map[string]string{
		"3":  gen + "\x00bb\x00\x00",
		"3x": gen + "\x00bb\x00\x00",
		"-1": gen + "\x00\x00",
	} {
		out := e.Handle(1, wire.Msg{Type: abi.XS_DIRECTORY_PART, Payload: wire.JoinStrings("/d", off)})
		if len(out) != 1 || string(out[0].Msg.Payload) != want {
			t.Errorf("offset %q: got %q, want %q", off, out[0].Msg.Payload, want)
		}
	}
}
