package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// A domain's console is one WebSocket per viewer, CLI and browser alike:
//
//	GET /v1/domains/{dom}/console?offset=N&mode=rw|ro|force&ticket=T
//
// Server to client: binary messages are console output bytes, in order,
// from the starting offset; text messages are JSON ConsoleEvents: first a
// "hello" (where the binary stream starts, and the viewer's mode), then
// possibly "mode" (the writer's place was taken) and finally "end" (the
// domain or its back end is gone) before the close. Client to server:
// binary messages are input bytes (ignored for read-only viewers), text
// messages are JSON ConsoleControls ("resize").

// ConsolePath is the console endpoint of a domain (a name or id).
func ConsolePath(dom string) string { return "/v1/domains/" + url.PathEscape(dom) + "/console" }

// Console modes a viewer asks for and is given.
const (
	ConsoleRW    = "rw"    // the writer if there is none, else read-only
	ConsoleRO    = "ro"    // always read-only
	ConsoleForce = "force" // take the writer's place
)

// Console event types, server to client.
const (
	ConsoleHelloType = "hello"
	ConsoleModeType  = "mode"
	ConsoleEndType   = "end"
)

// ConsoleResizeType is the control message carrying a window size.
const ConsoleResizeType = "resize"

// ConsoleQuery is the endpoint's query string.
type ConsoleQuery struct {
	// Offset resumes the output at this byte of the console's history;
	// negative: from the oldest byte still kept.
	Offset int64
	Mode   string // ConsoleRW (default), ConsoleRO or ConsoleForce
	Ticket string // a one-shot ticket, for browsers
}

// Encode renders q as a query string (without '?').
func (q ConsoleQuery) Encode() string {
	v := url.Values{}
	if q.Offset >= 0 {
		v.Set("offset", strconv.FormatInt(q.Offset, 10))
	}
	if q.Mode != "" {
		v.Set("mode", q.Mode)
	}
	if q.Ticket != "" {
		v.Set("ticket", q.Ticket)
	}
	return v.Encode()
}

// ParseConsoleQuery reads the endpoint's query parameters.
func ParseConsoleQuery(v url.Values) (ConsoleQuery, error) {
	q := ConsoleQuery{Offset: -1, Mode: ConsoleRW, Ticket: v.Get("ticket")}
	if s := v.Get("offset"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return q, fmt.Errorf("offset %q: want a byte offset (0 or more)", s)
		}
		q.Offset = n
	}
	switch m := v.Get("mode"); m {
	case "":
	case ConsoleRW, ConsoleRO, ConsoleForce:
		q.Mode = m
	default:
		return q, fmt.Errorf("mode %q: want rw, ro or force", m)
	}
	return q, nil
}

// ConsoleEvent is a text message from the server: hello, mode or end.
type ConsoleEvent struct {
	Type string `json:"type"`
	// Offset (hello): the history offset of the first binary byte.
	Offset int64 `json:"offset,omitempty"`
	// Mode (hello, mode): ConsoleRW or ConsoleRO.
	Mode string `json:"mode,omitempty"`
	// Reason: why read-only (hello, mode), why it ended (end); a
	// sentence for a person.
	Reason string `json:"reason,omitempty"`
}

// ConsoleHello is the first event: where the stream starts, and the mode.
func ConsoleHello(offset int64, mode, reason string) ConsoleEvent {
	return ConsoleEvent{Type: ConsoleHelloType, Offset: offset, Mode: mode, Reason: reason}
}

// ConsoleControl is a text message from the client.
type ConsoleControl struct {
	Type string `json:"type"`
	Cols int    `json:"cols,omitempty"`
	Rows int    `json:"rows,omitempty"`
}

// MaxConsoleControl bounds a control message's size.
const MaxConsoleControl = 4096

// Window sizes outside 1..MaxConsoleDim are refused.
const MaxConsoleDim = 10000

// ErrConsoleControl means a control message could not be understood.
var ErrConsoleControl = errors.New("console: bad control message")

// ParseConsoleControl decodes a client's text message. Unknown types are
// an error the server may ignore; a resize must carry a sane size.
func ParseConsoleControl(b []byte) (ConsoleControl, error) {
	var c ConsoleControl
	if len(b) > MaxConsoleControl {
		return c, fmt.Errorf("%w: %d bytes", ErrConsoleControl, len(b))
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	if err := d.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrConsoleControl, err)
	}
	if d.More() {
		return c, fmt.Errorf("%w: trailing data", ErrConsoleControl)
	}
	switch c.Type {
	case ConsoleResizeType:
		if c.Cols < 1 || c.Rows < 1 || c.Cols > MaxConsoleDim || c.Rows > MaxConsoleDim {
			return c, fmt.Errorf("%w: window size %dx%d", ErrConsoleControl, c.Cols, c.Rows)
		}
	default:
		return c, fmt.Errorf("%w: type %q", ErrConsoleControl, c.Type)
	}
	return c, nil
}

// MarshalJSON implements json.Marshaler: a hello always carries its
// offset (0 too), the other events never do.
func (e ConsoleEvent) MarshalJSON() ([]byte, error) {
	type plain ConsoleEvent
	if e.Type != ConsoleHelloType {
		e.Offset = 0
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		Type   string `json:"type"`
		Offset int64  `json:"offset"`
		Mode   string `json:"mode,omitempty"`
		Reason string `json:"reason,omitempty"`
	}{e.Type, e.Offset, e.Mode, e.Reason})
}

// ParseConsoleEvent decodes a server's text message.
func ParseConsoleEvent(b []byte) (ConsoleEvent, error) {
	var e ConsoleEvent
	if len(b) > MaxConsoleControl {
		return e, fmt.Errorf("console: event of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("console: bad event: %v", err)
	}
	switch e.Type {
	case ConsoleHelloType, ConsoleModeType, ConsoleEndType:
	default:
		return e, fmt.Errorf("console: unknown event type %q", e.Type)
	}
	return e, nil
}
