package xenstore_test

import (
	"testing"

	"github.com/cockroachdb/datadriven"

	"shi/internal/xenstore"
	"shi/internal/xenstore/xenstoretest"
)

// TestScripts runs testdata/*.txt; rewrite expectations with -rewrite.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		q := xenstore.DefaultQuota()
		q.MaxNodes = 20
		q.MaxWatches = 3
		q.MaxTransactions = 2
		q.MaxTxNodes = 30
		env := xenstoretest.New(q)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			out := env.Handle(d)
			if err := env.E.State().Check(); err != nil {
				t.Fatalf("%s: invariant broken: %v", d.Pos, err)
			}
			return out
		})
	})
}
