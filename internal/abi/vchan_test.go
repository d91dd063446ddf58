package abi

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func vchanPage(left, right uint16, refs ...uint32) []byte {
	p := make([]byte, PAGE_SIZE)
	binary.LittleEndian.PutUint16(p[VCHAN_LEFT_ORDER:], left)
	binary.LittleEndian.PutUint16(p[VCHAN_RIGHT_ORDER:], right)
	for i, r := range refs {
		binary.LittleEndian.PutUint32(p[VCHAN_GRANTS+4*i:], r)
	}
	return p
}

func TestDecodeVchanLayout(t *testing.T) {
	refs := make([]uint32, 512)
	for i := range refs {
		refs[i] = uint32(100 + i)
	}
	for _, tc := range []struct {
		name        string
		page        []byte
		want        VchanLayout
		wantErr     bool
		left, right int // expected grant counts
	}{
		{name: "socket-proxy default 10/11", page: vchanPage(10, 11),
			want: VchanLayout{Left: VchanRing{Order: 10, InPage: 1024}, Right: VchanRing{Order: 11, InPage: 2048},
				LeftGrants: []GrantRef{}, RightGrants: []GrantRef{}}},
		{name: "11/10", page: vchanPage(11, 10),
			want: VchanLayout{Left: VchanRing{Order: 11, InPage: 2048}, Right: VchanRing{Order: 10, InPage: 1024},
				LeftGrants: []GrantRef{}, RightGrants: []GrantRef{}}},
		{name: "paged 13/12", page: vchanPage(13, 12, 7, 8, 9),
			want: VchanLayout{Left: VchanRing{Order: 13, Pages: 2}, Right: VchanRing{Order: 12, Pages: 1},
				LeftGrants: []GrantRef{7, 8}, RightGrants: []GrantRef{9}}},
		{name: "equal in-page orders", page: vchanPage(10, 10), wantErr: true},
		{name: "equal paged orders ok", page: vchanPage(12, 12, 1, 2),
			want: VchanLayout{Left: VchanRing{Order: 12, Pages: 1}, Right: VchanRing{Order: 12, Pages: 1},
				LeftGrants: []GrantRef{1}, RightGrants: []GrantRef{2}}},
		{name: "order 9", page: vchanPage(9, 11), wantErr: true},
		{name: "order 21", page: vchanPage(12, 21), wantErr: true},
		{name: "grants run into ring at 1024", page: vchanPage(20, 10, refs...), wantErr: true},
		{name: "max both paged fits", page: vchanPage(20, 20, refs...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeVchanLayout(tc.page)
			if tc.wantErr {
				if !errors.Is(err, ErrVchanLayout) {
					t.Fatalf("err = %v, want ErrVchanLayout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.Left.Order == 0 { // only check the shape
				if len(got.LeftGrants) != 256 || len(got.RightGrants) != 256 || got.RightGrants[0] != 356 {
					t.Fatalf("grants: %d/%d", len(got.LeftGrants), len(got.RightGrants))
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("layout (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := DecodeVchanLayout(make([]byte, 100)); err == nil {
		t.Error("short page decoded")
	}
}

func FuzzDecodeVchanLayout(f *testing.F) {
	f.Add(uint16(10), uint16(11), []byte{})
	f.Add(uint16(20), uint16(12), []byte{1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, left, right uint16, rest []byte) {
		p := vchanPage(left, right)
		copy(p[VCHAN_GRANTS:], rest)
		l, err := DecodeVchanLayout(p)
		if err != nil {
			return
		}
		for _, r := range []VchanRing{l.Left, l.Right} {
			if r.Size() < 1024 || r.Size() > 1<<20 {
				t.Fatalf("ring size %d", r.Size())
			}
			if r.InPage != 0 && r.InPage+r.Size() > PAGE_SIZE {
				t.Fatalf("in-page ring at %d size %d", r.InPage, r.Size())
			}
		}
		if len(l.LeftGrants) != l.Left.Pages || len(l.RightGrants) != l.Right.Pages {
			t.Fatalf("grant counts %d/%d for %d/%d pages", len(l.LeftGrants), len(l.RightGrants), l.Left.Pages, l.Right.Pages)
		}
	})
}
