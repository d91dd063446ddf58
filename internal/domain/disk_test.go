package domain

import (
	"strings"
	"testing"

	"shi/internal/devices/disknbd"
)

func TestParseDisk(t *testing.T) {
	good := map[string]Disk{
		"host=h2,path=/var/lib/shi/d1.img,dev=xvda,mode=w": {Host: "h2", Path: "/var/lib/shi/d1.img", Dev: "xvda", Mode: "w"},
		"path=/d.img,dev=xvdb,mode=r,export=:10809":        {Path: "/d.img", Dev: "xvdb", Mode: "r", Export: ":10809"},
		"format=raw, vdev=xvdc, target=/d.img":             {Path: "/d.img", Dev: "xvdc", Mode: "w"},
		"path=/d.img,dev=xvdaa,access=ro":                  {Path: "/d.img", Dev: "xvdaa", Mode: "r"},
	}
	for s, want := range good {
		got, err := ParseDisk(s)
		if err != nil || got != want {
			t.Errorf("ParseDisk(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	bad := map[string]string{
		"path=/d.img":                      "want at least",
		"dev=xvda":                         "want at least",
		"path=d.img,dev=xvda":              "absolute",
		"path=/a/../d.img,dev=xvda":        "absolute",
		"path=/d.img,dev=sda":              "Xen disk name",
		"path=/d.img,dev=xvda,mode=x":      "mode",
		"path=/d.img,dev=xvda,format=qcow": "raw",
		"path=/d.img,dev=xvda,export=10":   "HOST:PORT",
		"path=/d.img,dev=xvda,dev=xvdb":    "twice",
		"path=/d.img,dev=xvda,color=red":   "unknown key",
		"path=/d.img,dev=xvda,host=a b":    "host name",
		"path=/d.img,dev=xvda,junk":        "key=value",
	}
	for s, want := range bad {
		if _, err := ParseDisk(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDisk(%q) = %v; want an error saying %q", s, err, want)
		}
	}
}

func TestConfigDisks(t *testing.T) {
	_, err := ParseConfig(`name = "a"` + "\ncmd = \"/bin/true\"\n" + `disks = ["path=/d.img,dev=xvda", "path=/e.img,dev=xvda"]`)
	if err == nil || !strings.Contains(err.Error(), "named twice") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("a device named twice: %v", err)
	}
	c, err := ParseConfig(`name = "a"` + "\ncmd = \"/bin/true\"\n" + `disks = ["path=/d.img,dev=xvda", "host=h2,path=/e.img,dev=xvdb,mode=r"]`)
	if err != nil {
		t.Fatal(err)
	}
	ds := c.ParsedDisks("h1")
	if len(ds) != 2 || ds[0].Host != "h1" || ds[1].Host != "h2" || ds[1].Writable() || !ds[0].Writable() {
		t.Fatalf("ParsedDisks = %+v", ds)
	}
}

func TestDiskURI(t *testing.T) {
	for _, sock := range []string{"/run/shi/domains-h1-1/7/xvda.sock", "/run/shi/domains-a&b#c+d e?f%g;h-1/7/xvda.sock"} {
		u := DiskURI("xvda", sock)
		got, err := disknbd.ParseURI(u)
		if err != nil || got.Socket != sock || got.Dev != "xvda" {
			t.Errorf("DiskURI(%q) = %q, read back as %+v, %v", sock, u, got, err)
		}
	}
	if u := DiskURI("xvda", "/run/x.sock"); u != "nbd+unix:///xvda?socket=/run/x.sock" {
		t.Errorf("DiskURI = %q", u)
	}
}
