package evtchn

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps keeps the guest library free of cluster and agent code: a
// domain links only what a Xen guest would.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/guest/evtchn", append(deptest.Cluster, "shi/internal/domain", "shi/internal/evtchn", "shi/internal/gnttab", "testing")...)
}
