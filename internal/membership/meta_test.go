package membership

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fullMeta = Meta{
	APIURL:   "http://10.77.0.1:4000",
	RaftAddr: "10.77.0.1:4001",
	DataAddr: "[fe80::1]:4002",
	CPUs:     64,
	MemTotal: 1 << 40,
	MemFree:  1 << 39,
	Version:  "v0.1.0-dev+abcdef",
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []wireMeta{
		{},
		{Meta: fullMeta},
		{Meta: fullMeta, Leaving: true},
		// The largest Meta Validate allows still fits.
		{Meta: Meta{
			APIURL:   "http://" + strings.Repeat("a", maxAddrLen-len("http://")),
			RaftAddr: strings.Repeat("b", maxAddrLen-6) + ":65535",
			DataAddr: strings.Repeat("c", maxAddrLen-6) + ":65535",
			CPUs:     maxCPUs,
			MemTotal: ^uint64(0),
			MemFree:  ^uint64(0),
			Version:  strings.Repeat("\\", maxVersionLen),
		}, Leaving: true},
	} {
		b, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		if len(b) > MaxMetaSize {
			t.Fatalf("encoded %d bytes", len(b))
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestMetaRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"not json", "{", "bad meta"},
		{"array", "[]", "bad meta"},
		{"trailing", `{} {}`, "bad meta"},
		{"negative cpus", `{"cpus":-1}`, "cpus"},
		{"float cpus", `{"cpus":1.5}`, "bad meta"},
		{"huge cpus", `{"cpus":1e9}`, "bad meta"},
		{"negative mem", `{"mem":-1}`, "bad meta"},
		{"free above total", `{"mem":1,"free":2}`, "free memory"},
		{"api scheme", `{"api":"ftp://x"}`, "http(s)"},
		{"api no host", `{"api":"http://"}`, "http(s)"},
		{"raft no port", `{"raft":"10.0.0.1"}`, "raft address"},
		{"raft port 0", `{"raft":"10.0.0.1:0"}`, "bad port"},
		{"raft port big", `{"raft":"10.0.0.1:65536"}`, "bad port"},
		{"data no host", `{"data":":80"}`, "no host"},
		{"control char", `{"ver":"a\u0000b"}`, "printable"},
		{"non ascii", `{"ver":"é"}`, "printable"},
		{"invalid utf8", "{\"ver\":\"\xff\"}", "printable"},
		{"long version", `{"ver":"` + strings.Repeat("v", maxVersionLen+1) + `"}`, "longer"},
		{"too large", `{"ver":"` + strings.Repeat(" ", MaxMetaSize) + `"}`, "larger than"},
		{"wrong type", `{"api":1}`, "bad meta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeMeta([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("decodeMeta(%q) = %v, want error containing %q", tc.in, err, tc.err)
			}
		})
	}
}

func TestMetaAccepts(t *testing.T) {
	// Unknown fields are ignored, so a newer agent may gossip more.
	m, err := decodeMeta([]byte(`{"cpus":2,"gpu":"x","nested":{"a":[1]}}`))
	if err != nil || m.CPUs != 2 {
		t.Fatalf("got %+v, %v", m, err)
	}
	for _, in := range []string{"", "null", "{}", " {} "} {
		if m, err := decodeMeta([]byte(in)); err != nil || m != (wireMeta{}) {
			t.Fatalf("decodeMeta(%q) = %+v, %v", in, m, err)
		}
	}
}

// FuzzDecodeMeta: meta comes from the network. Decoding never panics, and
// whatever decodes re-encodes within the size limit to the same value.
func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []wireMeta{{}, {Meta: fullMeta}, {Meta: fullMeta, Leaving: true}} {
		b, err := encodeMeta(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "null", "{}", "[]", `{"cpus":-1}`, `{"mem":18446744073709551615}`,
		`{"API":"http://x"}`, `{"ver":"\u2028"}`, `{"ver":"\"\\"}`, `{"raft":"[::1]:1"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		enc, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("decoded %q to %+v, which does not encode: %v", b, m, err)
		}
		again, err := decodeMeta(enc)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", enc, err)
		}
		if again != m {
			t.Fatalf("round trip changed %+v to %+v", m, again)
		}
	})
}
