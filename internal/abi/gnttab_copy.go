package abi

import "encoding/binary"

// GnttabCopyPtr is one side of struct gnttab_copy: the union u (a grant
// ref in its low 32 bits when the side's GNTCOPY_*_gref flag is set, else
// a gmfn), the domain and the offset in the page.
type GnttabCopyPtr struct {
	U      uint64
	Domid  DomID
	Offset uint16
}

// GnttabCopy is struct gnttab_copy (GnttabCopySize bytes).
type GnttabCopy struct {
	Source, Dest GnttabCopyPtr
	Len          uint16
	Flags        uint16 // GNTCOPY_source_gref, GNTCOPY_dest_gref
	Status       int16  // OUT: GNTST_*
}

func (p GnttabCopyPtr) encode(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], p.U)
	binary.LittleEndian.PutUint16(b[8:], uint16(p.Domid))
	binary.LittleEndian.PutUint16(b[10:], p.Offset)
	clear(b[12:16])
}

func decodeCopyPtr(b []byte) GnttabCopyPtr {
	return GnttabCopyPtr{
		U:      binary.LittleEndian.Uint64(b[0:]),
		Domid:  DomID(binary.LittleEndian.Uint16(b[8:])),
		Offset: binary.LittleEndian.Uint16(b[10:]),
	}
}

// Encode writes c into b[:GnttabCopySize]; padding is zero.
func (c GnttabCopy) Encode(b []byte) {
	_ = b[GnttabCopySize-1]
	c.Source.encode(b[GnttabCopySourceOff:])
	c.Dest.encode(b[GnttabCopyDestOff:])
	binary.LittleEndian.PutUint16(b[GnttabCopyLenOff:], c.Len)
	binary.LittleEndian.PutUint16(b[GnttabCopyFlagsOff:], c.Flags)
	binary.LittleEndian.PutUint16(b[GnttabCopyStatusOff:], uint16(c.Status))
	clear(b[GnttabCopyStatusOff+2 : GnttabCopySize])
}

// DecodeGnttabCopy reads a struct gnttab_copy.
func DecodeGnttabCopy(b []byte) (GnttabCopy, error) {
	if len(b) < GnttabCopySize {
		return GnttabCopy{}, errShort
	}
	return GnttabCopy{
		Source: decodeCopyPtr(b[GnttabCopySourceOff:]),
		Dest:   decodeCopyPtr(b[GnttabCopyDestOff:]),
		Len:    binary.LittleEndian.Uint16(b[GnttabCopyLenOff:]),
		Flags:  binary.LittleEndian.Uint16(b[GnttabCopyFlagsOff:]),
		Status: int16(binary.LittleEndian.Uint16(b[GnttabCopyStatusOff:])),
	}, nil
}
