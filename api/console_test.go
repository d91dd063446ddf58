package api

import (
	"encoding/json"
	"net/url"
	"testing"
)

func TestConsoleMessages(t *testing.T) {
	b, _ := json.Marshal(ConsoleHello(0, ConsoleRW, ""))
	if string(b) != `{"type":"hello","offset":0,"mode":"rw"}` {
		t.Errorf("hello: %s", b)
	}
	b, _ = json.Marshal(ConsoleEvent{Type: ConsoleEndType, Offset: 9, Reason: "gone"})
	if string(b) != `{"type":"end","reason":"gone"}` {
		t.Errorf("end: %s", b)
	}
	if e, err := ParseConsoleEvent(b); err != nil || e.Reason != "gone" {
		t.Errorf("parse end: %+v %v", e, err)
	}
	c, err := ParseConsoleControl([]byte(`{"type":"resize","cols":80,"rows":24}`))
	if err != nil || c.Cols != 80 || c.Rows != 24 {
		t.Errorf("resize: %+v %v", c, err)
	}
	for _, bad := range []string{`{"type":"resize","cols":0,"rows":24}`, `{"type":"x"}`, `{}`, `[`, `{"type":"resize","cols":1,"rows":1} {}`} {
		if _, err := ParseConsoleControl([]byte(bad)); err == nil {
			t.Errorf("ParseConsoleControl(%s) accepted", bad)
		}
	}
	q, err := ParseConsoleQuery(url.Values{"offset": {"12"}, "mode": {"force"}})
	if err != nil || q.Offset != 12 || q.Mode != ConsoleForce {
		t.Errorf("query: %+v %v", q, err)
	}
	if q2, err := ParseConsoleQuery(mustQuery(q.Encode())); err != nil || q2 != q {
		t.Errorf("query round trip: %+v %v", q2, err)
	}
	for _, bad := range []string{"offset=-1", "offset=x", "mode=rx"} {
		if _, err := ParseConsoleQuery(mustQuery(bad)); err == nil {
			t.Errorf("query %q accepted", bad)
		}
	}
}

func mustQuery(s string) url.Values {
	v, err := url.ParseQuery(s)
	if err != nil {
		panic(err)
	}
	return v
}

// FuzzConsoleControl: control messages come from any viewer.
func FuzzConsoleControl(f *testing.F) {
	f.Add([]byte(`{"type":"resize","cols":80,"rows":24}`))
	f.Add([]byte(`{"type":"hello","offset":3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseConsoleControl(b); err == nil && (c.Type != ConsoleResizeType || c.Cols < 1 || c.Rows < 1 || c.Cols > MaxConsoleDim || c.Rows > MaxConsoleDim) {
			t.Fatalf("accepted %+v", c)
		}
		if e, err := ParseConsoleEvent(b); err == nil {
			if _, err := json.Marshal(e); err != nil {
				t.Fatal(err)
			}
		}
	})
}
