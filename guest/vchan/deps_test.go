package vchan

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps keeps vchan a guest library: it links what a Xen guest would,
// never cluster or agent code.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/guest/vchan", append(deptest.Cluster, "shi/internal/domain", "shi/internal/evtchn", "shi/internal/gnttab", "testing")...)
}
