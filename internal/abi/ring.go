package abi

// Shared ring header of DEFINE_RING_TYPES, from io/ring.h: four free-running
// u32 indices, a protocol-private word and padding, then the entries.
const (
	RING_REQ_PROD    = 0  // written by the front end
	RING_REQ_EVENT   = 4  // written by the back end: notify when req_prod passes it
	RING_RSP_PROD    = 8  // written by the back end
	RING_RSP_EVENT   = 12 // written by the front end
	RING_PVT         = 16 // protocol-private union, zeroed at init
	RING_HEADER_SIZE = 64 // ring[] starts here
)

// XEN_FLEX_RING_SIZE is the bytes per direction of a flex ring of the given
// page order, from io/ring.h.
func XEN_FLEX_RING_SIZE(order uint) int { return 1 << (order + 12 - 1) }
