package bench

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fioSample is the shape of fio 3.33's JSON, cut down, with the line the
// nbd engine prints first.
const fioSample = `fio: connected to NBD server
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "x",
      "error" : 0,
      "read" : { "io_bytes" : 409600, "bw_bytes" : 4096000, "iops" : 1000.5, "total_ios" : 100, "clat_ns" : { "mean" : 2000.0 } },
      "write" : { "io_bytes" : 409600, "bw_bytes" : 2048000, "iops" : 500.0, "total_ios" : 300, "clat_ns" : { "mean" : 4000.0 } },
      "trim" : { "iops" : 0, "total_ios" : 0 }
    }
  ]
}
`

func TestParseFio(t *testing.T) {
	r, err := ParseFio([]byte(fioSample))
	if err != nil {
		t.Fatal(err)
	}
	if r.IOPS != 1500.5 || r.BWBytes != 6144000 || r.IOs != 400 || r.ClatMean != 3500*time.Nanosecond {
		t.Fatalf("%+v", r)
	}
	for _, bad := range []string{"", "fio: no server", "{", `{"jobs": []}`,
		strings.Replace(fioSample, `"error" : 0`, `"error" : 5`, 1),
		strings.NewReplacer(`"total_ios" : 100`, `"total_ios" : 0`, `"total_ios" : 300`, `"total_ios" : 0`).Replace(fioSample)} {
		if _, err := ParseFio([]byte(bad)); err == nil {
			t.Fatalf("ParseFio accepted %q", bad)
		}
	}
}

// The harness end to end without an agent: shi's NBD server on a file
// against nbdkit and qemu-nbd on the same file.
func TestRunDiskNoDomain(t *testing.T) {
	for _, p := range []string{"fio", "nbdkit"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh installs it)", p)
		}
	}
	var out bytes.Buffer
	err := RunDisk(context.Background(), DiskConfig{Size: 16 << 20, Runtime: 200 * time.Millisecond, Runs: 2,
		Workloads: []DiskWorkload{DiskWorkloads[0], DiskWorkloads[3]}}, &out)
	t.Logf("\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !regexp.MustCompile(`^shi nbd file 4k randread QD32 iops / nbdkit iops = \d+\.\d\d$`).MatchString(lines[len(lines)-1]) {
		t.Fatalf("last line %q", lines[len(lines)-1])
	}
	rows := regexp.MustCompile(`(?m)^4k randread QD32 +\d+ iops .* \d+ iops .* \d+\.\d\d$|^1M read QD4 +\d+ MB/s .* \d+ MB/s .*\d+\.\d\d$`).FindAllString(out.String(), -1)
	if len(rows) != 2 {
		t.Fatalf("want a row for each workload, got %q", rows)
	}
}

// FuzzParseFio: whatever fio printed, an answer or an error, never a panic.
func FuzzParseFio(f *testing.F) {
	f.Add([]byte(fioSample))
	f.Add([]byte(`{"jobs":[{"read":{"total_ios":1}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseFio(b)
		if err == nil && r.IOs <= 0 {
			t.Fatalf("accepted %q with no I/O", b)
		}
	})
}
