package gnttab

import "shi/internal/abi"

// CopyPtr is one side of a gnttab_copy: a grant ref of Dom (with the
// GNTCOPY_*_gref flag) or a frame of the caller (Dom must be DOMID_SELF).
type CopyPtr struct {
	Ref    Ref    // grant side
	Frame  uint32 // caller's own frame
	Dom    DomID
	Offset uint16
}

// CopyOp is struct gnttab_copy.
type CopyOp struct {
	Source, Dest CopyPtr
	Len          uint16
	Flags        uint16 // GNTCOPY_source_gref, GNTCOPY_dest_gref
}

// Copy is GNTTABOP_copy for one op issued by caller. Grant sides are
// checked like a map (the grant must be for caller; the destination must
// not be readonly) and pinned for the duration of the copy, so that the
// granter cannot end access halfway.
func (t *Table) Copy(caller DomID, op CopyOp) Status {
	if int(op.Source.Offset)+int(op.Len) > abi.PAGE_SIZE || int(op.Dest.Offset)+int(op.Len) > abi.PAGE_SIZE {
		return BadCopyArg
	}
	if t.doms[caller] == nil {
		return BadDomain
	}
	src, srelease, st := t.claim(caller, op.Source, op.Flags&abi.GNTCOPY_source_gref != 0, true)
	if st != Okay {
		return st
	}
	defer srelease()
	dst, drelease, st := t.claim(caller, op.Dest, op.Flags&abi.GNTCOPY_dest_gref != 0, false)
	if st != Okay {
		return st
	}
	defer drelease()
	copy(dst[op.Dest.Offset:int(op.Dest.Offset)+int(op.Len)], src[op.Source.Offset:int(op.Source.Offset)+int(op.Len)])
	return Okay
}

// claim resolves one side of a copy to its page, pinning a grant side.
func (t *Table) claim(caller DomID, p CopyPtr, gref, readonly bool) ([]byte, func(), Status) {
	if !gref {
		if p.Dom != abi.DOMID_SELF {
			return nil, nil, PermissionDenied // only DOMID_SELF may name a frame
		}
		page := t.page(caller, p.Frame)
		if page == nil {
			return nil, nil, BadPage
		}
		return page, func() {}, Okay
	}
	dom := p.Dom
	if dom == abi.DOMID_SELF {
		dom = caller
	}
	g := t.doms[dom]
	if g == nil {
		return nil, nil, BadDomain
	}
	frame, st := t.pin(g, p.Ref, caller, readonly, false)
	if st != Okay {
		return nil, nil, st
	}
	return t.page(dom, frame), func() { unpinRef(g, p.Ref, readonly) }, Okay
}
