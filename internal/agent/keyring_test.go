package agent

import (
	"strings"
	"testing"
)

func TestParseKeyringRequest(t *testing.T) {
	for _, tc := range []struct {
		in, err string
	}{
		{`{"op":"install","key":"AQEBAQEBAQEBAQEBAQEBAQ=="}`, ""},
		{`{"op":"use","key":"AQEBAQEBAQEBAQEBAQEBAQ=="}`, ""},
		{`{"op":"remove","key":"AQEBAQEBAQEBAQEBAQEBAQ=="}`, ""},
		{`{"op":"drop","key":"AQEBAQEBAQEBAQEBAQEBAQ=="}`, "keyring op"},
		{`{"op":"install","key":"AQEB"}`, "want 16, 24 or 32"},
		{`{"op":"install","key":"!!"}`, "not base64"},
		{`{"op":`, "bad request"},
	} {
		_, err := parseKeyringRequest([]byte(tc.in))
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.in, err, tc.err)
		}
	}
}

func FuzzParseKeyringRequest(f *testing.F) {
	f.Add([]byte(`{"op":"install","key":"AQEBAQEBAQEBAQEBAQEBAQ=="}`))
	f.Add([]byte(`{"op":"use","key":""}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseKeyringRequest(b)
		if err == nil && req.Op != "install" && req.Op != "use" && req.Op != "remove" {
			t.Fatalf("accepted op %q", req.Op)
		}
	})
}
