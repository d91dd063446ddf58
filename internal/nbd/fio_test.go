package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Conformance with fio's nbd engine (libnbd underneath), and the export
// options real clients act on: multi-conn and the minimum block size.

// fioJob is the part of one job of fio's JSON output the tests read.
type fioJob struct {
	Name  string `json:"jobname"`
	Error int    `json:"error"`
	Read  fioDir `json:"read"`
	Write fioDir `json:"write"`
	Trim  fioDir `json:"trim"`
}

type fioDir struct {
	IOs  int64   `json:"total_ios"`
	IOPS float64 `json:"iops"`
}

// runFio runs one fio job with the nbd engine against uri and returns its
// figures; fio exiting non-zero (a verify mismatch, an I/O error) fails.
func runFio(t *testing.T, uri string, args ...string) fioJob {
	t.Helper()
	all := append([]string{"--name=conformance", "--ioengine=nbd", "--uri=" + uri, "--output-format=json"}, args...)
	cmd := exec.Command("fio", all...)
	cmd.Dir = t.TempDir() // fio leaves verify state files in its directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fio %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	// The engine prints a line before the JSON.
	i := bytes.IndexByte(out, '{')
	var res struct {
		Jobs []fioJob `json:"jobs"`
	}
	if i < 0 || json.Unmarshal(out[i:], &res) != nil || len(res.Jobs) != 1 {
		t.Fatalf("fio output:\n%s", out)
	}
	if j := res.Jobs[0]; j.Error != 0 {
		t.Fatalf("fio job error %d:\n%s", j.Error, out)
	}
	return res.Jobs[0]
}

func TestFio(t *testing.T) {
	needTool(t, "fio")
	img, u, tcp := toolServer(t)
	for _, base := range []string{u, tcp} {
		target := uri(base, "xvda")
		// Random 4 KiB writes over the whole disk, 16 in flight, then every
		// block read back and checked (fio fails on a mismatch).
		j := runFio(t, target, "--rw=randwrite", "--bs=4k", "--iodepth=16",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1")
		if n := int64(toolDisk / 4096); j.Write.IOs != n || j.Read.IOs != n {
			t.Fatalf("fio randwrite+verify on %s: %d writes, %d verify reads, want %d each", target, j.Write.IOs, j.Read.IOs, n)
		}
		f, err := OpenFile(img, true)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := f.Extents(0, toolDisk)
		f.Close()
		if err != nil || len(ext) != 1 || ext[0].Hole {
			t.Fatalf("after fio's writes through %s the image is not all data: %+v, %v", target, ext, err)
		}

		j = runFio(t, target, "--rw=randread", "--bs=4k", "--iodepth=32", "--number_ios=1000")
		if j.Read.IOs != 1000 || j.Write.IOs != 0 {
			t.Fatalf("fio randread on %s: %+v", target, j)
		}
		// Mixed sizes and a verify of what fio wrote with 64 KiB blocks.
		runFio(t, target, "--rw=randrw", "--bsrange=512-64k", "--iodepth=8", "--size=2M")
		runFio(t, target, "--rw=write", "--bs=64k", "--iodepth=4", "--verify=md5", "--do_verify=1", "--verify_fatal=1")

		// Trimming everything leaves the image a hole.
		j = runFio(t, target, "--rw=randtrim", "--bs=64k", "--iodepth=8")
		if j.Trim.IOs != toolDisk/(64<<10) {
			t.Fatalf("fio randtrim on %s: %d trims", target, j.Trim.IOs)
		}
		f, err = OpenFile(img, true)
		if err != nil {
			t.Fatal(err)
		}
		ext, err = f.Extents(0, toolDisk)
		f.Close()
		if err != nil || len(ext) != 1 || !ext[0].Hole {
			t.Fatalf("after fio's trims through %s: extents %+v, %v", target, ext, err)
		}
	}
	// The read-only export refuses fio's writes.
	out, err := exec.Command("fio", "--name=ro", "--ioengine=nbd", "--uri="+uri(u, "ro"), "--rw=write", "--bs=4k", "--size=64k").CombinedOutput()
	if err == nil {
		t.Fatalf("fio wrote to the read-only export:\n%s", out)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// serveUnix serves exports on a Unix socket until the test ends and
// returns the socket's path and its listener.
func serveUnix(t *testing.T, exports ...Export) (string, *countingListener) {
	t.Helper()
	s, err := NewServer(exports...)
	if err != nil {
		t.Fatal(err)
	}
	s.Logf = t.Logf
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, cl); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock, cl
}

// durableMem is a store whose writes are durable only after Flush: crash
// returns what survives. Like a disk's cache, it has one Flush for all
// writers, which is what makes multi-conn safe over it.
type durableMem struct {
	*Mem
	mu      sync.Mutex
	durable []byte
}

func (d *durableMem) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.Mem.ReadAt(d.durable, 0)
	return err
}

func (d *durableMem) crash() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.durable...)
}

func TestMultiConn(t *testing.T) {
	// Off unless the export says so.
	s, err := NewServer(Export{Name: "a", Backend: NewMem(4096, false)}, Export{Name: "b", Backend: NewMem(4096, false), MultiConn: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		name string
		want bool
	}{{"a", false}, {"b", true}} {
		_, flags := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES).goExport(e.name)
		if got := flags&NBD_FLAG_CAN_MULTI_CONN != 0; got != e.want {
			t.Fatalf("export %s: multi-conn %v, want %v (flags %#x)", e.name, got, e.want, flags)
		}
	}

	// What the flag promises: a flush on one connection makes a write
	// completed on another durable.
	d := &durableMem{Mem: NewMem(1<<16, false), durable: make([]byte, 1<<16)}
	s, err = NewServer(Export{Name: "d", Backend: d, MultiConn: true})
	if err != nil {
		t.Fatal(err)
	}
	c1 := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	c2 := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	c1.goExport("d")
	c2.goExport("d")
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if r := c1.reply(c1.request(NBD_CMD_WRITE, 0, 8192, 4096, data), 0, 0); r.Err != 0 {
		t.Fatalf("write: %v", r)
	}
	if got := d.crash(); !bytes.Equal(got[8192:12288], make([]byte, 4096)) {
		t.Fatal("the store made a write durable before any flush: the test proves nothing")
	}
	if r := c2.reply(c2.request(NBD_CMD_FLUSH, 0, 0, 0, nil), 0, 0); r.Err != 0 {
		t.Fatalf("flush: %v", r)
	}
	if got := d.crash(); !bytes.Equal(got[8192:12288], data) {
		t.Fatal("a flush on the second connection did not make the first's write durable")
	}

	// libnbd acts on the flag: nbdinfo reports it, and nbdcopy opens
	// several connections only when it is set, copying correctly either way.
	needTool(t, "nbdinfo")
	needTool(t, "nbdcopy")
	for _, mc := range []bool{false, true} {
		m := NewMem(8<<20, false)
		sock, ln := serveUnix(t, Export{Name: "x", Backend: m, MultiConn: mc})
		target := "nbd+unix:///x?socket=" + sock
		var info struct {
			Exports []struct {
				MultiConn bool `json:"can_multi_conn"`
			} `json:"exports"`
		}
		out := run(t, "nbdinfo", "--json", target)
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 || info.Exports[0].MultiConn != mc {
			t.Fatalf("nbdinfo with MultiConn %v: %v\n%s", mc, err, out)
		}
		src := filepath.Join(t.TempDir(), "src.img")
		b := bytes.Repeat([]byte("multi-conn "), (8<<20)/11+1)[:8<<20]
		if err := os.WriteFile(src, b, 0o600); err != nil {
			t.Fatal(err)
		}
		before := ln.n.Load()
		run(t, "nbdcopy", "--connections=4", src, target)
		conns := ln.n.Load() - before
		got := make([]byte, len(b))
		m.ReadAt(got, 0)
		if !bytes.Equal(got, b) {
			t.Fatalf("nbdcopy with MultiConn %v: the export differs from the source", mc)
		}
		if (conns > 1) != mc {
			t.Fatalf("nbdcopy opened %d connections with MultiConn %v", conns, mc)
		}
	}
}

// alignedMem refuses I/O not aligned to 512 bytes, as a blkif front end does.
type alignedMem struct{ *Mem }

func aligned(off int64, n int) error {
	if off%512 != 0 || n%512 != 0 {
		return fmt.Errorf("unaligned %d+%d reached the backend", off, n)
	}
	return nil
}

func (a alignedMem) ReadAt(p []byte, off int64) (int, error) {
	if err := aligned(off, len(p)); err != nil {
		return 0, err
	}
	return a.Mem.ReadAt(p, off)
}

func (a alignedMem) WriteAt(p []byte, off int64) (int, error) {
	if err := aligned(off, len(p)); err != nil {
		return 0, err
	}
	return a.Mem.WriteAt(p, off)
}

func (a alignedMem) Trim(off, n int64) error {
	if err := aligned(off, int(n)); err != nil {
		return err
	}
	return a.Mem.Trim(off, n)
}

func (a alignedMem) Zero(off, n int64, mayTrim bool) error {
	if err := aligned(off, int(n)); err != nil {
		return err
	}
	return a.Mem.Zero(off, n, mayTrim)
}

func TestMinBlock(t *testing.T) {
	for _, e := range []Export{
		{Name: "odd", Backend: NewMem(4096, false), MinBlock: 384},
		{Name: "huge", Backend: NewMem(1<<20, false), MinBlock: 128 << 10},
		{Name: "size", Backend: NewMem(1000, false), MinBlock: 512},
	} {
		if _, err := NewServer(e); err == nil {
			t.Fatalf("NewServer accepted export %s with MinBlock %d, size %d", e.Name, e.MinBlock, e.Backend.Size())
		}
	}

	m := alignedMem{NewMem(1<<20, false)}
	s, err := NewServer(Export{Name: "d", Backend: m, MinBlock: 512}, Export{Name: "any", Backend: NewMem(4096, false)})
	if err != nil {
		t.Fatal(err)
	}
	tc := newTestClient(t, s, NBD_FLAG_C_FIXED_NEWSTYLE|NBD_FLAG_C_NO_ZEROES)
	sizes := func(reps []optRep) (min, pref, max uint32, errType uint32) {
		for _, r := range reps {
			if r.Type&nbdRepErr != 0 {
				errType = r.Type
			}
			if r.Type == NBD_REP_INFO && len(r.Data) == 14 && r.Data[1] == NBD_INFO_BLOCK_SIZE {
				min, pref, max = binary.BigEndian.Uint32(r.Data[2:]), binary.BigEndian.Uint32(r.Data[6:]), binary.BigEndian.Uint32(r.Data[10:])
			}
		}
		return
	}
	if mn, pf, mx, e := sizes(tc.opt(NBD_OPT_INFO, infoData("any"))); mn != 1 || pf != 4096 || mx != MaxPayload || e != 0 {
		t.Fatalf("default block sizes %d/%d/%d, err %#x", mn, pf, mx, e)
	}
	if mn, pf, mx, e := sizes(tc.opt(NBD_OPT_INFO, infoData("d"))); mn != 512 || pf != 4096 || mx != MaxPayload || e != 0 {
		t.Fatalf("block sizes %d/%d/%d, err %#x", mn, pf, mx, e)
	}
	// A client that does not ask for block sizes cannot use the export.
	if _, _, _, e := sizes(tc.opt(NBD_OPT_GO, infoData("d"))); e != NBD_REP_ERR_BLOCK_SIZE_REQD {
		t.Fatalf("GO without NBD_INFO_BLOCK_SIZE: %#x", e)
	}
	if _, _, _, e := sizes(tc.opt(NBD_OPT_GO, infoData("d", NBD_INFO_BLOCK_SIZE))); e != 0 {
		t.Fatalf("GO: %#x", e)
	}
	// Unaligned requests stop at the server with EINVAL; aligned ones work.
	for _, q := range []struct {
		typ uint16
		off uint64
		n   uint32
	}{{NBD_CMD_READ, 100, 512}, {NBD_CMD_READ, 512, 100}, {NBD_CMD_WRITE, 1, 512}, {NBD_CMD_TRIM, 0, 1000}, {NBD_CMD_WRITE_ZEROES, 256, 512}} {
		var payload []byte
		if q.typ == NBD_CMD_WRITE {
			payload = make([]byte, q.n)
		}
		if r := tc.reply(tc.request(q.typ, 0, q.off, q.n, payload), q.off, 0); r.Err != NBD_EINVAL {
			t.Fatalf("unaligned command %d at %d+%d: %v", q.typ, q.off, q.n, r)
		}
	}
	if r := tc.reply(tc.request(NBD_CMD_WRITE, 0, 512, 1024, bytes.Repeat([]byte{7}, 1024)), 0, 0); r.Err != 0 {
		t.Fatalf("aligned write: %v", r)
	}
	if r := tc.reply(tc.request(NBD_CMD_READ, 0, 1024, 512, nil), 1024, 512); r.Err != 0 || !bytes.Equal(r.Data, bytes.Repeat([]byte{7}, 512)) {
		t.Fatalf("aligned read: %v", r)
	}

	// qemu honours the minimum: byte-granular I/O from qemu-io becomes
	// aligned read-modify-write, which the backend above accepts.
	needTool(t, "qemu-io")
	needTool(t, "nbdinfo")
	m2 := alignedMem{NewMem(1<<20, false)}
	sock, _ := serveUnix(t, Export{Name: "d", Backend: m2, MinBlock: 512})
	target := "nbd+unix:///d?socket=" + sock
	out := run(t, "nbdinfo", "--json", target)
	if !strings.Contains(out, `"block_size_minimum": 512`) {
		t.Fatalf("nbdinfo does not show a 512-byte minimum:\n%s", out)
	}
	out = run(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0xab 100 10",
		"-c", "write -P 0xcd 1000 3000",
		"-c", "read -P 0xab 100 10",
		"-c", "read -P 0 0 100",
		"-c", "read -P 0 110 890",
		"-c", "read -P 0xcd 1000 3000",
		target)
	if strings.Contains(out, "error") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io with a 512-byte minimum block:\n%s", out)
	}
	got := make([]byte, 4096)
	m2.Mem.ReadAt(got, 0)
	want := make([]byte, 4096)
	copy(want[100:110], bytes.Repeat([]byte{0xab}, 10))
	copy(want[1000:4000], bytes.Repeat([]byte{0xcd}, 3000))
	if !bytes.Equal(got, want) {
		t.Fatal("the export's first 4 KiB differ from what qemu-io wrote")
	}
}
