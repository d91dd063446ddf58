package blkif

import (
	"fmt"
	"path"
	"strconv"

	"shi/internal/xenstore"
)

// FrontPath is the front end's directory of a disk:
// /local/domain/<fe>/device/vbd/<devid>.
func FrontPath(fe, devid uint32) string {
	return "/local/domain/" + u(fe) + "/device/vbd/" + u(devid)
}

// BackendDir is where a driver domain finds the disks it serves, one
// <fe>/<devid> directory each: /local/domain/<be>/backend/vbd.
func BackendDir(be uint32) string {
	return "/local/domain/" + u(be) + "/backend/vbd"
}

// BackendPath is the back end's directory of a disk:
// /local/domain/<be>/backend/vbd/<fe>/<devid>.
func BackendPath(be, fe, devid uint32) string {
	return BackendDir(be) + "/" + u(fe) + "/" + u(devid)
}

// Keys of both directories, as Xen's toolstack, blkfront and blkback
// spell them (spec/xen-abi.md §6).
const (
	KeyState = "state"

	// Written by the toolstack.
	KeyBackend       = "backend"        // front: the back end's directory
	KeyBackendID     = "backend-id"     // front: the back end's domid
	KeyFrontend      = "frontend"       // back: the front end's directory
	KeyFrontendID    = "frontend-id"    // back: the front end's domid
	KeyVirtualDevice = "virtual-device" // front: DevID
	KeyDeviceType    = "device-type"    // front and back: "disk"
	KeyParams        = "params"         // back: the image file
	KeyMode          = "mode"           // back: "r" or "w"
	KeyOnline        = "online"         // back: "1"
	KeyType          = "type"           // back: "file"
	KeyDev           = "dev"            // back: the device name ("xvda")

	// Written by the front end.
	KeyRingRef        = "ring-ref" // single page; ring-ref<i> with ring-page-order
	KeyRingPageOrder  = "ring-page-order"
	KeyEventChannel   = "event-channel"
	KeyProtocol       = "protocol"
	KeyFeatureLargeSS = "feature-large-sector-size"

	// Written by the back end (KeyFeaturePersistent by both: a feature
	// is used when both ends say 1).
	KeyFeaturePersistent  = "feature-persistent"
	KeyFeatureFlushCache  = "feature-flush-cache"
	KeyFeatureBarrier     = "feature-barrier"
	KeyFeatureDiscard     = "feature-discard"
	KeyFeatureMaxIndirect = "feature-max-indirect-segments"
	KeyMaxRingPageOrder   = "max-ring-page-order"
	KeyDiscardGranularity = "discard-granularity"
	KeyDiscardAlignment   = "discard-alignment"
	KeyDiscardSecure      = "discard-secure"
	KeySectors            = "sectors"
	KeySectorSize         = "sector-size"
	KeyPhysSectorSize     = "physical-sector-size"
	KeyInfo               = "info"
	// KeyError holds, for a person, why an end gave up (state 6 follows).
	KeyError = "error"
)

// Values of the keys above.
const (
	ProtocolNative = "x86_64-abi" // the only protocol shi speaks
	DeviceTypeDisk = "disk"
	TypeFile       = "file"
	ModeRead       = "r"
	ModeWrite      = "w"
)

// RingRefKey is the key of ring page i of a multi-page ring ("ring-ref0").
func RingRefKey(i int) string { return KeyRingRef + strconv.Itoa(i) }

// Spec is one disk of a domain, as the toolstack knows it.
type Spec struct {
	Dev      string // "xvda"
	Path     string // the image file on the back end's host
	Writable bool
}

// Mode is the disk's mode key: "w" or "r".
func (s Spec) Mode() string {
	if s.Writable {
		return ModeWrite
	}
	return ModeRead
}

// Keys are the toolstack's XenStore commands for one disk of domain fe
// served by driver domain be: both directories with state 1, owned as
// Xen does (the front dir owned by fe and readable by be, the back dir
// owned by be and readable by fe), the cross links, backend-id and
// frontend-id, virtual-device, device-type "disk", params (the image
// path), mode "r"|"w", online 1, type "file" and dev (the name).
func Keys(fe, be uint32, s Spec) ([]xenstore.Command, error) {
	devid, err := DevID(s.Dev)
	if err != nil {
		return nil, err
	}
	if s.Path == "" || !path.IsAbs(s.Path) {
		return nil, fmt.Errorf("blkif: disk %s: path %q is not absolute", s.Dev, s.Path)
	}
	fp, bp := FrontPath(fe, devid), BackendPath(be, fe, devid)
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
	node(bp+"/"+KeyFrontend, fp, beP)
	node(bp+"/"+KeyFrontendID, u(fe), beP)
	node(bp+"/"+KeyParams, s.Path, beP)
	node(bp+"/"+KeyMode, s.Mode(), beP)
	node(bp+"/"+KeyOnline, "1", beP)
	node(bp+"/"+KeyType, TypeFile, beP)
	node(bp+"/"+KeyDev, s.Dev, beP)
	node(bp+"/"+KeyDeviceType, DeviceTypeDisk, beP)
	node(bp+"/"+KeyState, StateInitialising.String10(), beP)
	node(fp, "", feP)
	node(fp+"/"+KeyBackend, bp, feP)
	node(fp+"/"+KeyBackendID, u(be), feP)
	node(fp+"/"+KeyVirtualDevice, u(devid), feP)
	node(fp+"/"+KeyDeviceType, DeviceTypeDisk, feP)
	node(fp+"/"+KeyState, StateInitialising.String10(), feP)
	return ops, nil
}

func u(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
