package blkif

import (
	"testing"
)

func TestDevID(t *testing.T) {
	for _, c := range []struct {
		name string
		want uint32
	}{
		{"xvda", 51712},
		{"xvdb", 51728},
		{"xvda1", 51713},
		{"xvdb15", 51743},
		{"xvdp", 202<<8 | 15<<4},
		{"xvdq", 1<<28 | 16<<8},
		{"xvdz", 1<<28 | 25<<8},
		{"xvdaa", 1<<28 | 26<<8},
		{"xvdab", 1<<28 | 27<<8},
		{"xvdba", 1<<28 | 52<<8},
		{"xvda16", 1<<28 | 16},
		{"xvdq3", 1<<28 | 16<<8 | 3},
	} {
		got, err := DevID(c.name)
		if err != nil || got != c.want {
			t.Errorf("DevID(%q) = %d, %v; want %d", c.name, got, err, c.want)
			continue
		}
		name, err := DevName(got)
		if err != nil || name != c.name {
			t.Errorf("DevName(%d) = %q, %v; want %q", got, name, err, c.name)
		}
	}
	for _, bad := range []string{"", "xvd", "sda", "hda", "xvdA", "xvd1", "xvda0", "xvda01", "xvda256",
		"xvda-1", "xvdzzzzz", "xvda1b", "xvda99999"} {
		if v, err := DevID(bad); err == nil {
			t.Errorf("DevID(%q) = %d, want an error", bad, v)
		}
	}
	for _, bad := range []uint32{0, 3 << 8, 2 << 28, 201 << 8} {
		if n, err := DevName(bad); err == nil {
			t.Errorf("DevName(%d) = %q, want an error", bad, n)
		}
	}
}

func TestPaths(t *testing.T) {
	if got := FrontPath(5, 51712); got != "/local/domain/5/device/vbd/51712" {
		t.Errorf("FrontPath = %q", got)
	}
	if got := BackendDir(1); got != "/local/domain/1/backend/vbd" {
		t.Errorf("BackendDir = %q", got)
	}
	if got := BackendPath(1, 5, 51712); got != "/local/domain/1/backend/vbd/5/51712" {
		t.Errorf("BackendPath = %q", got)
	}
}

func TestState(t *testing.T) {
	for s := StateUnknown; s <= StateReconfigured; s++ {
		got, err := ParseState([]byte(s.String10()))
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v", s.String10(), got, err)
		}
	}
	for _, bad := range []string{"", "x", "9", "-1", "256"} {
		if _, err := ParseState([]byte(bad)); err == nil {
			t.Errorf("ParseState(%q) succeeded", bad)
		}
	}
	if StateConnected.String() != "Connected" || !StateClosed.Closing() || StateConnected.Closing() {
		t.Error("state names")
	}
}
