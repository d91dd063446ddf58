// Package toolstack is the toolstack's part of a disk: the XenStore
// commands that make both ends' directories. It stands apart from blkif,
// which both ends link, so that a domain's front end does not link the
// XenStore engine whose commands these are.
package toolstack

import (
	"fmt"
	"path"
	"strconv"

	"shi/internal/devices/blkif"
	"shi/internal/xenstore"
)

// Spec is one disk of a domain, as the toolstack knows it.
type Spec struct {
	Dev      string // "xvda"
	Path     string // the image file on the back end's host
	Writable bool
}

// Mode is the disk's mode key: "w" or "r".
func (s Spec) Mode() string {
	if s.Writable {
		return blkif.ModeWrite
	}
	return blkif.ModeRead
}

// Keys are the toolstack's XenStore commands for one disk of domain fe
// served by driver domain be: both directories with state 1, owned as
// Xen does (the front dir owned by fe and readable by be, the back dir
// owned by be and readable by fe), the cross links, backend-id and
// frontend-id, virtual-device, device-type "disk", params (the image
// path), mode "r"|"w", online 1, type "file" and dev (the name).
func Keys(fe, be uint32, s Spec) ([]xenstore.Command, error) {
	devid, err := blkif.DevID(s.Dev)
	if err != nil {
		return nil, err
	}
	if s.Path == "" || !path.IsAbs(s.Path) {
		return nil, fmt.Errorf("blkif: disk %s: path %q is not absolute", s.Dev, s.Path)
	}
	fp, bp := blkif.FrontPath(fe, devid), blkif.BackendPath(be, fe, devid)
	feP := xenstore.Perms{{Dom: fe}, {Dom: be, Bits: xenstore.PermRead}}
	beP := xenstore.Perms{{Dom: be}, {Dom: fe, Bits: xenstore.PermRead}}
	var ops []xenstore.Command
	node := func(path, value string, perms xenstore.Perms) {
		ops = append(ops,
			xenstore.Command{Op: xenstore.OpWrite, Path: path, Value: []byte(value)},
			xenstore.Command{Op: xenstore.OpSetPerms, Path: path, Perms: perms})
	}
	// The back end first: a front end that sees its directory finds the
	// back end's waiting for it.
	node(bp, "", beP)
	node(bp+"/"+blkif.KeyFrontend, fp, beP)
	node(bp+"/"+blkif.KeyFrontendID, u(fe), beP)
	node(bp+"/"+blkif.KeyParams, s.Path, beP)
	node(bp+"/"+blkif.KeyMode, s.Mode(), beP)
	node(bp+"/"+blkif.KeyOnline, "1", beP)
	node(bp+"/"+blkif.KeyType, blkif.TypeFile, beP)
	node(bp+"/"+blkif.KeyDev, s.Dev, beP)
	node(bp+"/"+blkif.KeyDeviceType, blkif.DeviceTypeDisk, beP)
	node(bp+"/"+blkif.KeyState, blkif.StateInitialising.String10(), beP)
	node(fp, "", feP)
	node(fp+"/"+blkif.KeyBackend, bp, feP)
	node(fp+"/"+blkif.KeyBackendID, u(be), feP)
	node(fp+"/"+blkif.KeyVirtualDevice, u(devid), feP)
	node(fp+"/"+blkif.KeyDeviceType, blkif.DeviceTypeDisk, feP)
	node(fp+"/"+blkif.KeyState, blkif.StateInitialising.String10(), feP)
	return ops, nil
}

func u(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
