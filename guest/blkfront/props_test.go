package blkfront

import (
	"errors"
	"syscall"
	"testing"

	"shi/internal/devices/blkif"
)

// TestParseProps: the back end's keys, as Xen's blkback writes them, and
// values a back end must not write.
func TestParseProps(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]string
		want props
		bad  bool
	}{
		{"linux blkback", map[string]string{"sectors": "2048", "sector-size": "512", "info": "0", "feature-flush-cache": "1",
			"feature-discard": "1", "feature-max-indirect-segments": "256"},
			props{size: 1 << 20, sectorSize: 512, flush: true, discard: true, maxIndirect: 256}, false},
		{"read-only by info", map[string]string{"sectors": "8", "info": "4"}, props{size: 4096, sectorSize: 512, readOnly: true}, false},
		{"read-only by mode", map[string]string{"sectors": "8", "mode": "r"}, props{size: 4096, sectorSize: 512, readOnly: true}, false},
		{"4k sectors", map[string]string{"sectors": "2", "sector-size": "4096"}, props{size: 8192, sectorSize: 4096}, false},
		{"no sectors", map[string]string{"sector-size": "512"}, props{}, true},
		{"sectors not a number", map[string]string{"sectors": "-1"}, props{}, true},
		{"size past int64", map[string]string{"sectors": "18014398509481984", "sector-size": "1024"}, props{}, true},
		{"sector-size not a power of two", map[string]string{"sectors": "8", "sector-size": "768"}, props{}, true},
		{"sector-size under 512", map[string]string{"sectors": "8", "sector-size": "256"}, props{}, true},
		{"a bad feature is off", map[string]string{"sectors": "8", "feature-flush-cache": "yes", "feature-max-indirect-segments": "x"},
			props{size: 4096, sectorSize: 512}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProps(tc.vals)
			if tc.bad {
				if !errors.Is(err, syscall.EINVAL) {
					t.Fatalf("err %v, want EINVAL", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

// FuzzParseProps: whatever a back end writes in its keys, parseProps
// returns a size that is a whole number of sectors and fits, or an
// error; it never panics.
func FuzzParseProps(f *testing.F) {
	f.Add("2048", "512", "0", "w", "1", "1", "256")
	f.Add("99999999999999999999", "4096", "4", "r", "", "x", "-3")
	f.Fuzz(func(t *testing.T, sectors, ss, info, mode, flush, discard, indirect string) {
		p, err := parseProps(map[string]string{blkif.KeySectors: sectors, blkif.KeySectorSize: ss, blkif.KeyInfo: info,
			blkif.KeyMode: mode, blkif.KeyFeatureFlushCache: flush, blkif.KeyFeatureDiscard: discard,
			blkif.KeyFeatureMaxIndirect: indirect})
		if err != nil {
			return
		}
		if p.sectorSize < 512 || p.sectorSize&(p.sectorSize-1) != 0 || p.size < 0 || p.size%int64(p.sectorSize) != 0 ||
			p.maxIndirect < 0 || p.maxIndirect > 1<<16 {
			t.Fatalf("%+v", p)
		}
	})
}
