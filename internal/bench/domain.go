package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"shi/guest/evtchn"
	"shi/guest/gnttab"
	gring "shi/guest/ring"
	"shi/guest/xs"
	"shi/internal/abi"
)

// The domain side of the benchmarks. DomainMain runs inside a domain
// ("shi benchdomain ROLE key=value...") and reports through XenStore: the
// domain created first learns its peer from ~/data/peer, the second gets
// it as peer=ID; results go to ~/data/result, read by the benchmark as
// domain 0 before it destroys the pair.

const setupTimeout = 60 * time.Second

// CPUProfileEnv, in a benchmark domain's environment, names a directory
// (writable by the domain's uid) where it writes a CPU profile of its
// role, ROLE-dom<ID>.pprof, when the role is done ("shi bench evtchn|ring
// -cpuprofile DIR").
const CPUProfileEnv = "SHI_BENCH_CPUPROFILE"

// DomainMain runs one role of a benchmark domain; it returns only on
// failure (a finished domain waits to be destroyed).
func DomainMain(args []string) error {
	if err := domainRole(args); err != nil {
		return err
	}
	select {} // until destroyed
}

// startCPUProfile profiles this process into dir until stop is called.
func startCPUProfile(dir, role string, me abi.DomID) (stop func(), err error) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-dom%d.pprof", role, me)))
	if err != nil {
		return nil, fmt.Errorf("benchdomain: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("benchdomain: cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// domainRole runs the role and returns when it is done.
func domainRole(args []string) error {
	if len(args) == 0 {
		return errors.New("benchdomain: need a role")
	}
	p := map[string]int64{}
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("benchdomain: bad parameter %q", a)
		}
		p[k] = n
	}
	if us, ok := p["spin"]; ok {
		gring.SpinFor = time.Duration(us) * time.Microsecond
	}
	d, err := newBenchDomain()
	if err != nil {
		return err
	}
	if dir := os.Getenv(CPUProfileEnv); dir != "" {
		stop, err := startCPUProfile(dir, args[0], d.me)
		if err != nil {
			return err
		}
		defer stop()
	}
	switch args[0] {
	case "evtchn-pong":
		err = d.evtchnPong(p)
	case "evtchn-ping":
		err = d.evtchnPing(p)
	case "ring-consumer":
		err = d.ringConsumer(p)
	case "ring-producer":
		err = d.ringProducer(p)
	case "vchan-server":
		err = d.vchanServer(p)
	case "vchan-client":
		err = d.vchanClient(p)
	default:
		err = fmt.Errorf("benchdomain: unknown role %q", args[0])
	}
	if err != nil {
		return err
	}
	return nil
}

type benchDomain struct {
	me  abi.DomID
	xs  *xs.Client
	evt *evtchn.Handle
}

func newBenchDomain() (*benchDomain, error) {
	id, err := strconv.Atoi(os.Getenv("SHI_DOMID"))
	if err != nil {
		return nil, errors.New("benchdomain: not started as a domain (no SHI_DOMID)")
	}
	c, err := xs.OpenEnv()
	if err != nil {
		return nil, err
	}
	e, err := evtchn.OpenSelf()
	if err != nil {
		return nil, err
	}
	return &benchDomain{me: abi.DomID(id), xs: c, evt: e}, nil
}

func (d *benchDomain) home(id abi.DomID) string { return fmt.Sprintf("/local/domain/%d/data/", id) }

// read waits for a node and returns its value.
func (d *benchDomain) read(path string) (string, error) {
	w, err := d.xs.Watch(path, "b:"+path)
	if err != nil {
		return "", err
	}
	defer d.xs.Unwatch(w)
	deadline := time.After(setupTimeout)
	for {
		if v, err := d.xs.Read(path); err == nil {
			return string(v), nil
		}
		select {
		case <-w.Events():
		case <-deadline:
			return "", fmt.Errorf("benchdomain: %s did not appear", path)
		}
	}
}

func (d *benchDomain) readNum(path string) (int64, error) {
	v, err := d.read(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// publish writes ~/data/key readable by reader.
func (d *benchDomain) publish(key, value string, reader abi.DomID) error {
	path := d.home(d.me) + key
	return d.xs.Transaction(func(t *xs.Tx) error {
		if err := t.Write(path, []byte(value)); err != nil {
			return err
		}
		return t.SetPerms(path, xs.Perm{Domid: uint32(d.me)}, xs.Perm{Domid: uint32(reader), Access: xs.AccessRead})
	})
}

// waitGo waits until the benchmark has written run's number (or a later
// one) to ~/data/go: runs alternate with the baseline's, so both see the
// same load.
func (d *benchDomain) waitGo(run int64) error {
	path := d.home(d.me) + "go"
	w, err := d.xs.Watch(path, "go")
	if err != nil {
		return err
	}
	defer d.xs.Unwatch(w)
	deadline := time.After(10 * time.Minute)
	for {
		if v, err := d.xs.Read(path); err == nil {
			if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && n >= run {
				return nil
			}
		}
		select {
		case <-w.Events():
		case <-deadline:
			return fmt.Errorf("benchdomain: no go for run %d", run)
		}
	}
}

func (d *benchDomain) peer(p map[string]int64) (abi.DomID, error) {
	if v, ok := p["peer"]; ok {
		return abi.DomID(v), nil
	}
	v, err := d.readNum(d.home(d.me) + "peer")
	return abi.DomID(v), err
}

// serve allocates a port for the peer and publishes it.
func (d *benchDomain) serve(peer abi.DomID) (evtchn.Port, error) {
	port, err := d.evt.AllocUnbound(peer)
	if err != nil {
		return 0, err
	}
	return port, d.publish("port", strconv.Itoa(int(port)), peer)
}

// bind binds to the peer's published port and takes the bind's event.
func (d *benchDomain) bind(peer abi.DomID) (evtchn.Port, error) {
	rp, err := d.readNum(d.home(peer) + "port")
	if err != nil {
		return 0, err
	}
	port, err := d.evt.BindInterdomain(peer, evtchn.Port(rp))
	if err != nil {
		return 0, err
	}
	if _, err := d.evt.Wait(setupTimeout); err != nil {
		return 0, err
	}
	return port, d.evt.Unmask(port)
}

func (d *benchDomain) wait(port evtchn.Port) error {
	got, err := d.evt.Wait(-1)
	if err != nil {
		return err
	}
	if got != port {
		return fmt.Errorf("benchdomain: event on port %d, want %d", got, port)
	}
	return d.evt.Unmask(port)
}

func (d *benchDomain) evtchnPong(p map[string]int64) error {
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	port, err := d.serve(peer)
	if err != nil {
		return err
	}
	for range 1 + p["runs"]*p["rounds"] {
		if err := d.wait(port); err != nil {
			return err
		}
		if err := d.evt.Notify(port); err != nil {
			return err
		}
	}
	return nil
}

func (d *benchDomain) evtchnPing(p map[string]int64) error {
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	port, err := d.bind(peer)
	if err != nil {
		return err
	}
	roundTrip := func() error {
		if err := d.evt.Notify(port); err != nil {
			return err
		}
		return d.wait(port)
	}
	if err := roundTrip(); err != nil { // warm-up: doorbells in place
		return err
	}
	for run := range p["runs"] {
		if err := d.waitGo(run); err != nil {
			return err
		}
		t0 := time.Now()
		for range p["rounds"] {
			if err := roundTrip(); err != nil {
				return err
			}
		}
		perOp := int64(time.Since(t0)) / p["rounds"]
		if err := d.publish("result/"+strconv.FormatInt(run, 10), strconv.FormatInt(perOp, 10), 0); err != nil {
			return err
		}
	}
	return nil
}

func (d *benchDomain) ringProducer(p map[string]int64) error {
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	s, err := g.SharePages(peer, 1+int(p["pages"]), true)
	if err != nil {
		return err
	}
	port, err := d.evt.AllocUnbound(peer)
	if err != nil {
		return err
	}
	pw, err := gring.NewPipeWriter(s.Bytes(), d.evt, port)
	if err != nil {
		return err
	}
	mp, err := g.SharePages(peer, 1, true)
	if err != nil {
		return err
	}
	// Refs go in nodes of up to 256 (a node holds at most 4 KiB).
	var refs []string
	for i, r := range s.Refs {
		refs = append(refs, strconv.Itoa(int(r)))
		if len(refs) == 256 || i == len(s.Refs)-1 {
			if err := d.publish("refs/"+strconv.Itoa(i/256), strings.Join(refs, " "), peer); err != nil {
				return err
			}
			refs = refs[:0]
		}
	}
	if err := d.publish("mapref", strconv.Itoa(int(mp.Refs[0])), peer); err != nil {
		return err
	}
	if err := d.publish("port", strconv.Itoa(int(port)), peer); err != nil {
		return err
	}
	if err := d.wait(port); err != nil { // the consumer is ready
		return err
	}
	chunk := p["chunk"]
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	var off int64
	for run := range p["runs"] {
		if err := d.waitGo(run); err != nil {
			return err
		}
		if err := writeStream(pw, buf, off, p["bytes"], chunk); err != nil {
			return err
		}
		off += p["bytes"]
	}
	return pw.Close()
}

func (d *benchDomain) ringConsumer(p map[string]int64) error {
	peer, err := d.peer(p)
	if err != nil {
		return err
	}
	// mapref is published last: then all refs are there.
	mapref, err := d.readNum(d.home(peer) + "mapref")
	if err != nil {
		return err
	}
	var refs []gnttab.Ref
	for i := 0; ; i++ {
		v, err := d.xs.Read(d.home(peer) + "refs/" + strconv.Itoa(i))
		if err != nil {
			break
		}
		for _, f := range strings.Fields(string(v)) {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return err
			}
			refs = append(refs, gnttab.Ref(n))
		}
	}
	if len(refs) != 1+int(p["pages"]) {
		return fmt.Errorf("benchdomain: got %d ring refs, want %d", len(refs), 1+p["pages"])
	}
	if err != nil {
		return err
	}
	g, err := gnttab.OpenSelf()
	if err != nil {
		return err
	}
	m, err := g.Map(peer, refs, true)
	if err != nil {
		return err
	}
	port, err := d.bind(peer)
	if err != nil {
		return err
	}
	pr, err := gring.NewPipeReader(m.Bytes(), d.evt, port)
	if err != nil {
		return err
	}
	if err := d.evt.Notify(port); err != nil { // ready
		return err
	}
	chunk := p["chunk"]
	buf := make([]byte, chunk)
	var off int64
	for run := range p["runs"] {
		if err := d.waitGo(run); err != nil {
			return err
		}
		t0 := time.Now()
		if err := readStream(pr, buf, off, p["bytes"], chunk); err != nil {
			return err
		}
		off += p["bytes"]
		if err := d.publish("result/"+strconv.FormatInt(run, 10), strconv.FormatInt(int64(time.Since(t0)), 10), 0); err != nil {
			return err
		}
	}
	if _, err := pr.Read(buf[:1]); err != io.EOF {
		return fmt.Errorf("benchdomain: stream longer than expected: %v", err)
	}
	// Maps and unmaps are timed apart too: across hosts a map waits for
	// the page's content, an unmap only sends a fence.
	var maps time.Duration
	t0 := time.Now()
	for range p["maps"] {
		tm := time.Now()
		mm, err := g.Map(peer, []gnttab.Ref{gnttab.Ref(mapref)}, true)
		if err != nil {
			return err
		}
		maps += time.Since(tm)
		if err := g.Unmap(mm); err != nil {
			return err
		}
	}
	total := time.Since(t0)
	if err := d.publish("maponly", strconv.FormatInt(int64(maps), 10), 0); err != nil {
		return err
	}
	return d.publish("map", strconv.FormatInt(int64(total), 10), 0)
}

// readStream reads n bytes of a benchmark stream, from stream offset off,
// into buf, and checks the offset the writer put at each chunk's start.
func readStream(r io.Reader, buf []byte, off, n, chunk int64) error {
	for end := off + n; off < end; {
		k, err := r.Read(buf[:min(int64(len(buf)), end-off)])
		if err != nil {
			return fmt.Errorf("benchdomain: read at %d: %w", off, err)
		}
		for q := (off + chunk - 1) / chunk * chunk; q+8 <= off+int64(k); q += chunk {
			if got := binary.LittleEndian.Uint64(buf[q-off:]); got != uint64(q) {
				return fmt.Errorf("benchdomain: stream corrupt at %d: marker %d", q, got)
			}
		}
		off += int64(k)
	}
	return nil
}

// writeStream writes n bytes of a benchmark stream, from stream offset
// off, in writes of at most a chunk: stream byte o is buf[o%chunk], where
// buf starts with the offset of o's chunk, for readStream to check.
func writeStream(w io.Writer, buf []byte, off, n, chunk int64) error {
	for end := off + n; off < end; {
		at := off % chunk
		k := min(chunk-at, end-off)
		binary.LittleEndian.PutUint64(buf, uint64(off-at))
		if _, err := w.Write(buf[at : at+k]); err != nil {
			return fmt.Errorf("benchdomain: write at %d: %w", off, err)
		}
		off += k
	}
	return nil
}
