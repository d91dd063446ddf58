package blkif

import (
	"strconv"
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

func u(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
