// Package bench holds the workloads behind "shi bench NAME". Each runs
// against a live agent, measures shi's path and the ordinary path in the
// same run, and writes a small table whose last line is the headline
// ratio. Benchmarks report figures; they never assert timings.
package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Table prints aligned rows.
type Table struct {
	W    io.Writer
	rows [][]string
}

// Row adds a row.
func (t *Table) Row(cells ...string) { t.rows = append(t.rows, cells) }

// Flush prints the rows, columns aligned by characters (µs, –), not bytes.
func (t *Table) Flush() {
	var w []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(w) {
				w = append(w, 0)
			}
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		for i, c := range r {
			if i == len(r)-1 {
				fmt.Fprintln(t.W, c)
			} else {
				fmt.Fprintf(t.W, "%s%s  ", c, strings.Repeat(" ", w[i]-utf8.RuneCountInString(c)))
			}
		}
	}
	t.rows = nil
}

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Secs formats a duration in seconds.
func Secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
