package abi

// struct xencons_interface, from io/console.h: two byte rings and their
// free-running u32 indices at the start of one page. Ring i is at
// idx & (size-1).
const (
	XENCONS_IN_OFF   = 0 // in[]: backend -> guest (keyboard)
	XENCONS_IN_SIZE  = 1024
	XENCONS_OUT_OFF  = 1024 // out[]: guest -> backend (console output)
	XENCONS_OUT_SIZE = 2048
	XENCONS_IN_CONS  = 3072 // written by the guest
	XENCONS_IN_PROD  = 3076 // written by the backend
	XENCONS_OUT_CONS = 3080 // written by the backend
	XENCONS_OUT_PROD = 3084 // written by the guest
	XENCONS_SIZE     = 3088 // sizeof(struct xencons_interface)
)
