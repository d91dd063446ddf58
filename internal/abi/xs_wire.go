package abi

import "strconv"

// XenStore message types, from xen/include/public/io/xs_wire.h (Xen 4.17).
const (
	XS_CONTROL              = 0
	XS_DIRECTORY            = 1
	XS_READ                 = 2
	XS_GET_PERMS            = 3
	XS_WATCH                = 4
	XS_UNWATCH              = 5
	XS_TRANSACTION_START    = 6
	XS_TRANSACTION_END      = 7
	XS_INTRODUCE            = 8
	XS_RELEASE              = 9
	XS_GET_DOMAIN_PATH      = 10
	XS_WRITE                = 11
	XS_MKDIR                = 12
	XS_RM                   = 13
	XS_SET_PERMS            = 14
	XS_WATCH_EVENT          = 15
	XS_ERROR                = 16
	XS_IS_DOMAIN_INTRODUCED = 17
	XS_RESUME               = 18
	XS_SET_TARGET           = 19
	XS_RESET_WATCHES        = 21
	XS_DIRECTORY_PART       = 22
	XS_TYPE_COUNT           = 23
	XS_INVALID              = 0xffff
)

// XS_DEBUG is the historical name of XS_CONTROL.
const XS_DEBUG = XS_CONTROL

// Limits from xs_wire.h.
const (
	XENSTORE_PAYLOAD_MAX  = 4096
	XENSTORE_ABS_PATH_MAX = 3072
	XENSTORE_REL_PATH_MAX = 2048
	XS_HEADER_SIZE        = 16 // struct xsd_sockmsg
)

// Permission bits of the C API (xenstore_lib.h).
const (
	XS_PERM_NONE  = 0
	XS_PERM_READ  = 1
	XS_PERM_WRITE = 2
)

// xenbus_state from io/xenbus.h, stored as decimal text in "state" keys.
const (
	XenbusStateUnknown       = 0
	XenbusStateInitialising  = 1
	XenbusStateInitWait      = 2
	XenbusStateInitialised   = 3
	XenbusStateConnected     = 4
	XenbusStateClosing       = 5
	XenbusStateClosed        = 6
	XenbusStateReconfiguring = 7
	XenbusStateReconfigured  = 8
)

var xsTypeNames = [...]string{
	XS_CONTROL:              "XS_CONTROL",
	XS_DIRECTORY:            "XS_DIRECTORY",
	XS_READ:                 "XS_READ",
	XS_GET_PERMS:            "XS_GET_PERMS",
	XS_WATCH:                "XS_WATCH",
	XS_UNWATCH:              "XS_UNWATCH",
	XS_TRANSACTION_START:    "XS_TRANSACTION_START",
	XS_TRANSACTION_END:      "XS_TRANSACTION_END",
	XS_INTRODUCE:            "XS_INTRODUCE",
	XS_RELEASE:              "XS_RELEASE",
	XS_GET_DOMAIN_PATH:      "XS_GET_DOMAIN_PATH",
	XS_WRITE:                "XS_WRITE",
	XS_MKDIR:                "XS_MKDIR",
	XS_RM:                   "XS_RM",
	XS_SET_PERMS:            "XS_SET_PERMS",
	XS_WATCH_EVENT:          "XS_WATCH_EVENT",
	XS_ERROR:                "XS_ERROR",
	XS_IS_DOMAIN_INTRODUCED: "XS_IS_DOMAIN_INTRODUCED",
	XS_RESUME:               "XS_RESUME",
	XS_SET_TARGET:           "XS_SET_TARGET",
	20:                      "XS_RESTRICT",
	XS_RESET_WATCHES:        "XS_RESET_WATCHES",
	XS_DIRECTORY_PART:       "XS_DIRECTORY_PART",
}

// XSTypeName returns the xs_wire.h name of a message type, or "XS_<n>".
func XSTypeName(t uint32) string {
	if int(t) < len(xsTypeNames) && xsTypeNames[t] != "" {
		return xsTypeNames[t]
	}
	return "XS_" + strconv.FormatUint(uint64(t), 10)
}
