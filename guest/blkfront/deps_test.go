package blkfront

import (
	"testing"

	"shi/internal/deptest"
)

// TestDeps keeps the front end linkable by any domain: no cluster or
// agent code.
func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/guest/blkfront", append(deptest.Cluster, "shi/internal/domain", "shi/internal/evtchn", "shi/internal/gnttab", "testing")...)
}
