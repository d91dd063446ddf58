package link

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps keeps the guest library free of cluster and agent code: a
// domain links only what a Xen guest would.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/guest/link", append(deptest.Cluster, "shi/internal/domain", "shi/internal/hypervisor",
		"shi/internal/transport", "shi/internal/evtchn", "shi/internal/gnttab", "testing")...)
}
