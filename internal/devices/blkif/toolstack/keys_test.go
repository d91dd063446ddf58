package toolstack

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shi/internal/xenstore"
)

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
