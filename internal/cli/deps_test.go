package cli

import (
	"testing"

	"shi/internal/deptest"
)

func TestDeps(t *testing.T) {
	deptest.Forbid(t, "shi/internal/cli", append(deptest.Cluster, "testing")...)
}
