package bench

import "testing"

func TestEventFDPingPong(t *testing.T) {
	r, err := EventFDPingPong(200)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 200 || r.Duration <= 0 || r.PerOp() <= 0 {
		t.Fatalf("result %+v", r)
	}
	t.Log(r)
}

func TestUnixStreamThroughput(t *testing.T) {
	r, err := UnixStreamThroughput(8<<20+123, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 8<<20+123 || r.BytesPerSecond() <= 0 {
		t.Fatalf("result %+v", r)
	}
	t.Log(r)
}

func BenchmarkEventFDPingPong(b *testing.B) {
	r, err := EventFDPingPong(b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.PerOp().Nanoseconds()), "ns/roundtrip")
}

func BenchmarkUnixStream(b *testing.B) {
	const chunk = 256 << 10
	b.SetBytes(chunk)
	r, err := UnixStreamThroughput(int64(b.N)*chunk, chunk)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.BytesPerSecond()/1e9, "GB/s")
}
