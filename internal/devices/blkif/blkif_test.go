package blkif

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shi/internal/xenstore"
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

// TestKeys applies the commands to a real store, as the toolstack would in
// one transaction as dom0, and checks every node's value and permissions.
func TestKeys(t *testing.T) {
	const fe, be = 7, 2
	ops, err := Keys(fe, be, Spec{Dev: "xvdb", Path: "/var/lib/shi/d1.img", Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	s := xenstore.NewState(xenstore.DefaultQuota())
	s, res := s.Apply(&xenstore.Command{Op: xenstore.OpTx, Ops: ops})
	if res.Err != 0 {
		t.Fatalf("apply: %v", res.Err)
	}
	fp, bp := "/local/domain/7/device/vbd/51728", "/local/domain/2/backend/vbd/7/51728"
	feP := xenstore.Perms{{Dom: fe}, {Dom: be, Bits: xenstore.PermRead}}
	beP := xenstore.Perms{{Dom: be}, {Dom: fe, Bits: xenstore.PermRead}}
	want := map[string]string{
		fp: "", fp + "/backend": bp, fp + "/backend-id": "2", fp + "/virtual-device": "51728",
		fp + "/device-type": "disk", fp + "/state": "1",
		bp: "", bp + "/frontend": fp, bp + "/frontend-id": "7", bp + "/params": "/var/lib/shi/d1.img",
		bp + "/mode": "w", bp + "/online": "1", bp + "/type": "file", bp + "/dev": "xvdb",
		bp + "/device-type": "disk", bp + "/state": "1",
	}
	for p, v := range want {
		n := s.Get(p)
		if n == nil {
			t.Errorf("%s missing", p)
			continue
		}
		if string(n.Value) != v {
			t.Errorf("%s = %q, want %q", p, n.Value, v)
		}
		perms := beP
		if strings.HasPrefix(p, fp) {
			perms = feP
		}
		if diff := cmp.Diff(perms, n.Perms); diff != "" {
			t.Errorf("%s perms (-want +got):\n%s", p, diff)
		}
		for _, c := range n.Children {
			if _, ok := want[p+"/"+c]; !ok {
				t.Errorf("unexpected key %s/%s", p, c)
			}
		}
	}

	ops, err = Keys(fe, be, Spec{Dev: "xvda", Path: "/d.img"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ = s.Apply(&xenstore.Command{Op: xenstore.OpTx, Ops: ops})
	if n := s.Get("/local/domain/2/backend/vbd/7/51712/mode"); n == nil || string(n.Value) != "r" {
		t.Errorf("read-only disk's mode = %v", n)
	}

	for _, bad := range []Spec{{Dev: "sda", Path: "/d.img"}, {Dev: "xvda", Path: "d.img"}, {Dev: "xvda"}} {
		if _, err := Keys(fe, be, bad); err == nil {
			t.Errorf("Keys(%+v) succeeded", bad)
		}
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
