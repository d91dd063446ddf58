package cli

import (
	"strings"
	"testing"
)

// The placement flags are checked before any agent is asked.
func TestBenchHostsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "evtchn", "-node", "h0", "-hosts", "h0,h1"}, "give one of them"},
		{[]string{"bench", "ring", "-hosts", "h0"}, "want two host names"},
		{[]string{"bench", "ring", "-hosts", "h0,h1,h2"}, "want two host names"},
	} {
		code, _, errs := run(t, "http://127.0.0.1:1", tc.args...)
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
	// Good flags get as far as the agent, which is not there.
	code, _, errs := run(t, "http://127.0.0.1:1", "bench", "evtchn", "-hosts", "h0,h1")
	if code != 1 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Errorf("-hosts h0,h1 without an agent: exit %d, stderr %q", code, errs)
	}
}
