package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"shi/api"
	"shi/internal/nbd"
)

// The disk benchmark: fio (its nbd engine) against a domain's disk,
// through the NBD socket the domain's disk is served on, and against
// nbdkit's file plugin serving the same image file, in one run.

// DiskConfig is "shi bench disk".
type DiskConfig struct {
	// API is the agent's URL; empty runs no domain (the harness alone:
	// shi's NBD server on the file against the baselines).
	API string
	// Hosts are the domain's host and its disk's host (the back end);
	// two different ones make the disk remote. Empty: the agent's host
	// (placement decides) for both.
	Hosts [2]string
	// Image is the raw image file; it is made (Size bytes of data) when
	// missing, and removed afterwards only if made here.
	Image string
	Size  int64
	// Runtime is each fio run's length; Runs the rounds, each running
	// every workload on every path, in alternating order.
	Runtime time.Duration
	Runs    int
	// NbdkitURI, if set, is an nbdkit already serving Image (across hosts:
	// on the back end's host, over TCP); otherwise one is started here on a
	// Unix socket.
	NbdkitURI string
	// Workloads to run; nil: all of DiskWorkloads.
	Workloads []DiskWorkload
	// Fio, Nbdkit, QemuNBD are the programs (default: found in PATH; a
	// missing qemu-nbd drops its row).
	Fio, Nbdkit, QemuNBD string
}

// DiskWorkload is one fio job.
type DiskWorkload struct {
	Name    string // the row's name
	RW      string // fio's rw=
	BS      string // fio's bs=
	IODepth int
	Seq     bool // report MB/s rather than IOPS
}

// DiskWorkloads are the rows, the headline first.
var DiskWorkloads = []DiskWorkload{
	{Name: "4k randread QD32", RW: "randread", BS: "4k", IODepth: 32},
	{Name: "4k randread QD1", RW: "randread", BS: "4k", IODepth: 1},
	{Name: "4k randwrite QD32", RW: "randwrite", BS: "4k", IODepth: 32},
	{Name: "1M read QD4", RW: "read", BS: "1M", IODepth: 4, Seq: true},
	{Name: "1M write QD4", RW: "write", BS: "1M", IODepth: 4, Seq: true},
}

// FioResult is what one fio run measured, both directions summed.
type FioResult struct {
	IOPS     float64
	BWBytes  float64 // bytes per second
	IOs      int64
	ClatMean time.Duration // mean completion latency
}

// ParseFio reads fio's --output-format=json output (which the nbd engine
// prefixes with a line of its own) for its one job.
func ParseFio(out []byte) (FioResult, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return FioResult{}, fmt.Errorf("no JSON in fio's output: %q", firstLine(out))
	}
	type dir struct {
		IOPS    float64 `json:"iops"`
		BWBytes float64 `json:"bw_bytes"`
		IOs     int64   `json:"total_ios"`
		Clat    struct {
			Mean float64 `json:"mean"` // ns
		} `json:"clat_ns"`
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  dir `json:"read"`
			Write dir `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out[i:], &res); err != nil {
		return FioResult{}, fmt.Errorf("fio's JSON: %w", err)
	}
	if len(res.Jobs) != 1 {
		return FioResult{}, fmt.Errorf("fio reported %d jobs, want 1", len(res.Jobs))
	}
	j := res.Jobs[0]
	if j.Error != 0 {
		return FioResult{}, fmt.Errorf("fio's job failed with error %d", j.Error)
	}
	r := FioResult{IOPS: j.Read.IOPS + j.Write.IOPS, BWBytes: j.Read.BWBytes + j.Write.BWBytes, IOs: j.Read.IOs + j.Write.IOs}
	if r.IOs > 0 {
		ns := (j.Read.Clat.Mean*float64(j.Read.IOs) + j.Write.Clat.Mean*float64(j.Write.IOs)) / float64(r.IOs)
		r.ClatMean = time.Duration(ns)
	}
	if r.IOs == 0 {
		return r, errors.New("fio did no I/O")
	}
	return r, nil
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\n"))
	return string(l)
}

// fioArgs is the command line of one workload against uri.
func fioArgs(w DiskWorkload, uri string, runtime time.Duration, size int64) []string {
	return []string{
		"--name=" + strings.ReplaceAll(w.Name, " ", "-"), "--ioengine=nbd", "--uri=" + uri,
		"--rw=" + w.RW, "--bs=" + w.BS, "--iodepth=" + strconv.Itoa(w.IODepth),
		"--size=" + strconv.FormatInt(size, 10),
		"--time_based", "--runtime=" + strconv.FormatFloat(runtime.Seconds(), 'f', 3, 64) + "s",
		"--randrepeat=0", "--norandommap", "--output-format=json",
	}
}

// diskPath is one way to the image: a name for the table and an NBD URI.
type diskPath struct {
	name, uri string
	// jobs, if set, is the directory a domain takes fio runs from: fio
	// then runs inside the domain, through its own NBD socket (see
	// domainFio), as the domain's programs would.
	jobs string
}

func (c *DiskConfig) remote() bool {
	return c.Hosts[0] != "" && c.Hosts[1] != "" && c.Hosts[0] != c.Hosts[1]
}

// RunDisk runs the benchmark and writes its table to w; the last line is
// the headline ratio: the first workload through the first path (the
// domain's disk; without an agent, shi's NBD server on the file) over
// nbdkit's.
func RunDisk(ctx context.Context, cfg DiskConfig, w io.Writer) error {
	if cfg.Runtime <= 0 {
		cfg.Runtime = 5 * time.Second
	}
	cfg.Runs = max(cfg.Runs, 1)
	if cfg.Size <= 0 {
		cfg.Size = 256 << 20
	}
	if cfg.Workloads == nil {
		cfg.Workloads = DiskWorkloads
	}
	look := func(p *string, name string, need bool) error {
		if *p != "" {
			return nil
		}
		found, err := exec.LookPath(name)
		if err != nil && need {
			return fmt.Errorf("%s not found (scripts/deps.sh installs it): %w", name, err)
		}
		*p = found
		return nil
	}
	if err := look(&cfg.Fio, "fio", true); err != nil {
		return err
	}
	if err := look(&cfg.Nbdkit, "nbdkit", cfg.NbdkitURI == ""); err != nil {
		return err
	}
	if cfg.remote() {
		if cfg.NbdkitURI == "" {
			return errors.New("a remote disk needs -nbdkit: the URI of an nbdkit serving the image on the disk's host")
		}
		if cfg.API == "" {
			return errors.New("a remote disk needs the agent")
		}
	}
	if !cfg.remote() {
		look(&cfg.QemuNBD, "qemu-nbd", false)
	}

	dir, err := os.MkdirTemp("", "shi-bench-disk.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// A domain's disk back end runs under a uid of its own: it must reach
	// the image.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if cfg.Image == "" {
		cfg.Image = filepath.Join(dir, "disk.img")
	}
	if err := makeImage(cfg.Image, cfg.Size); err != nil {
		return err
	}
	st, err := os.Stat(cfg.Image)
	if err != nil {
		return err
	}
	size := st.Size()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var paths []diskPath

	// (a) shi's path: a domain whose disk is the image.
	if cfg.API != "" {
		// A directory the domain's uid may write its results in.
		jobs := filepath.Join(dir, "jobs")
		if err := os.Mkdir(jobs, 0o777); err != nil {
			return err
		}
		if err := os.Chmod(jobs, 0o777); err != nil { // past the umask
			return err
		}
		ps, stop, err := startDiskDomain(ctx, cfg, jobs)
		if err != nil {
			return err
		}
		defer stop()
		paths = append(paths, ps...)
	}
	// shi's NBD server on the file, in this process (the same host only:
	// it is a server, not a disk path).
	if !cfg.remote() {
		p, stop, err := serveFile(ctx, cfg.Image, filepath.Join(dir, "shi-nbd.sock"))
		if err != nil {
			return err
		}
		defer stop()
		paths = append(paths, p)
	}
	// (b) the ordinary path: nbdkit's file plugin on the same file.
	nbdkit := diskPath{name: "nbdkit file", uri: cfg.NbdkitURI}
	if cfg.NbdkitURI == "" {
		sock := filepath.Join(dir, "nbdkit.sock")
		stop, err := startServer(ctx, "unix", sock, cfg.Nbdkit, "--foreground", "--exit-with-parent", "-U", sock, "file", cfg.Image)
		if err != nil {
			return fmt.Errorf("nbdkit: %w", err)
		}
		defer stop()
		nbdkit.uri = "nbd+unix:///?socket=" + sock
	} else {
		nbdkit.name += " (TCP)"
	}
	base := len(paths) // the ratios' denominator
	paths = append(paths, nbdkit)
	if cfg.NbdkitURI == "" && len(paths) > 1 && paths[1].name == "shi disk export" {
		// The export's baseline: nbdkit on TCP loopback.
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		stop, err := startServer(ctx, "tcp", addr, cfg.Nbdkit, "--foreground", "--exit-with-parent", "-i", "127.0.0.1", "-p", strconv.Itoa(port), "file", cfg.Image)
		if err != nil {
			return fmt.Errorf("nbdkit on TCP: %w", err)
		}
		defer stop()
		paths = append(paths, diskPath{name: "nbdkit file (TCP)", uri: "nbd://" + addr + "/"})
	}
	if cfg.QemuNBD != "" {
		sock := filepath.Join(dir, "qemu-nbd.sock")
		stop, err := startServer(ctx, "unix", sock, cfg.QemuNBD, "--persistent", "--format=raw", "--cache=writeback", "-k", sock, cfg.Image)
		if err != nil {
			return fmt.Errorf("qemu-nbd: %w", err)
		}
		defer stop()
		paths = append(paths, diskPath{name: "qemu-nbd", uri: "nbd+unix:///?socket=" + sock})
	}

	fmt.Fprintf(w, "fio (nbd engine) on a %d MiB image, %v per run, rounds: %d (the median is reported); paths:\n", size>>20, cfg.Runtime, cfg.Runs)
	for _, p := range paths {
		where := ""
		if p.jobs != "" {
			where = "  (fio inside the domain)"
		}
		fmt.Fprintf(w, "  %-22s %s%s\n", p.name, p.uri, where)
	}
	res := make([][][]FioResult, len(cfg.Workloads)) // [workload][path][run]
	for i := range res {
		res[i] = make([][]FioResult, len(paths))
	}
	for r := 0; r < cfg.Runs; r++ {
		for i, wl := range cfg.Workloads {
			for k := range paths {
				// Alternate the order so neither path always runs first.
				j := k
				if r%2 == 1 {
					j = len(paths) - 1 - k
				}
				args := fioArgs(wl, paths[j].uri, cfg.Runtime, size)
				var out FioResult
				var err error
				if paths[j].jobs != "" {
					out, err = domainFio(ctx, paths[j].jobs, args)
				} else {
					out, err = runFio(ctx, cfg.Fio, args)
				}
				if err != nil {
					return fmt.Errorf("%s through %s: %w", wl.Name, paths[j].name, err)
				}
				res[i][j] = append(res[i][j], out)
			}
		}
	}

	var t Table
	t.W = w
	head := []string{"workload"}
	for _, p := range paths {
		head = append(head, p.name)
	}
	t.Row(append(head, paths[0].name+" / nbdkit")...)
	nk := base
	var headline float64
	for i, wl := range cfg.Workloads {
		row := []string{wl.Name}
		vals := make([]float64, len(paths))
		for j := range paths {
			var xs []float64
			var lat []time.Duration
			for _, r := range res[i][j] {
				if wl.Seq {
					xs = append(xs, r.BWBytes/1e6)
				} else {
					xs = append(xs, r.IOPS)
				}
				lat = append(lat, r.ClatMean)
			}
			vals[j] = medianF(xs)
			if wl.Seq {
				row = append(row, fmt.Sprintf("%.0f MB/s", vals[j]))
			} else {
				row = append(row, fmt.Sprintf("%.0f iops (%s)", vals[j], micros(median(lat))))
			}
		}
		ratio := vals[0] / vals[nk]
		if i == 0 {
			headline = ratio
		}
		row = append(row, fmt.Sprintf("%.2f", ratio))
		t.Row(row...)
	}
	t.Flush()
	h := cfg.Workloads[0].Name
	switch {
	case cfg.API == "":
		h = "shi nbd file " + h
	case cfg.remote():
		h = "remote disk " + h
	default:
		h = "disk " + h
	}
	fmt.Fprintf(w, "%s iops / nbdkit iops = %.2f\n", h, headline)
	return nil
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// makeImage fills a new image of size bytes with data (not holes, which
// servers answer without reading) that does not compress to nothing. An
// existing image is left as it is.
func makeImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// The mode is not left to the umask: the back end's uid writes it.
	if err := f.Chmod(0o666); err != nil {
		f.Close()
		return err
	}
	buf := make([]byte, 1<<20)
	var x uint64 = 0x9e3779b97f4a7c15
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i+8 <= len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			buf[i], buf[i+1], buf[i+2], buf[i+3] = byte(x), byte(x>>8), byte(x>>16), byte(x>>24)
			buf[i+4], buf[i+5], buf[i+6], buf[i+7] = byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56)
		}
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// runFio runs fio and parses its figures; a failure says what fio said.
func runFio(ctx context.Context, fio string, args []string) (FioResult, error) {
	cmd := exec.CommandContext(ctx, fio, args...)
	cmd.Dir = os.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return FioResult{}, fmt.Errorf("fio: %w: %s%s", err, strings.TrimSpace(stderr.String()), tail(out))
	}
	return ParseFio(out)
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return ""
	}
	return "\n" + string(b)
}

// startServer starts an NBD server program that listens on addr, and
// waits until it serves.
func startServer(ctx context.Context, network, addr, prog string, args ...string) (stop func(), err error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		cmd.Process.Kill()
		<-exited
	}
	if err := waitNBD(ctx, network, addr, exited, 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return stop, nil
}

// waitNBD waits until an NBD server answers on addr.
func waitNBD(ctx context.Context, network, addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := probeNBD(network, addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve NBD within %v: %w", addr, timeout, err)
		}
		select {
		case <-exited:
			return errors.New("exited before serving")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// probeNBD connects, reads the greeting and leaves with NBD_OPT_ABORT, so
// the server sees a client that said goodbye, not a broken connection.
func probeNBD(network, addr string) error {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(greet[:]) != nbd.NBDMAGIC || binary.BigEndian.Uint64(greet[8:]) != nbd.IHAVEOPT {
		return fmt.Errorf("not an NBD newstyle greeting: % x", greet)
	}
	var q []byte
	q = binary.BigEndian.AppendUint32(q, nbd.NBD_FLAG_C_FIXED_NEWSTYLE|uint32(binary.BigEndian.Uint16(greet[16:]))&nbd.NBD_FLAG_C_NO_ZEROES)
	q = binary.BigEndian.AppendUint64(q, nbd.IHAVEOPT)
	q = binary.BigEndian.AppendUint32(q, nbd.NBD_OPT_ABORT)
	q = binary.BigEndian.AppendUint32(q, 0)
	if _, err := c.Write(q); err != nil {
		return err
	}
	// The ACK is optional: a server may just close.
	io.ReadFull(c, make([]byte, 20))
	return nil
}

// freePort is a TCP port on loopback that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// serveFile serves the image with internal/nbd in this process.
func serveFile(ctx context.Context, image, sock string) (diskPath, func(), error) {
	f, err := nbd.OpenFile(image, false)
	if err != nil {
		return diskPath{}, nil, err
	}
	s, err := nbd.NewServer(nbd.Export{Name: "disk", Backend: f, MultiConn: true})
	if err != nil {
		f.Close()
		return diskPath{}, nil, err
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		f.Close()
		return diskPath{}, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.Serve(ctx, ln); close(done) }()
	return diskPath{name: "shi nbd file", uri: "nbd+unix:///disk?socket=" + sock}, func() {
		cancel()
		<-done
		f.Close()
	}, nil
}

// startDiskDomain creates a domain whose disk xvda is the image (on the
// disk's host) and returns the paths to it: the NBD socket its disk is
// served on, on the domain's host (this one), and when the disk is local
// its export over TCP.
func startDiskDomain(ctx context.Context, cfg DiskConfig, jobs string) ([]diskPath, func(), error) {
	c := api.NewClient(cfg.API)
	disk := fmt.Sprintf("path=%s,dev=xvda,mode=w", cfg.Image)
	if cfg.Hosts[1] != "" {
		disk = "host=" + cfg.Hosts[1] + "," + disk
	}
	name := fmt.Sprintf("bench-disk-%d", os.Getpid())
	// The domain runs the fio jobs put in jobs (domainFio) on its own
	// disk, through the NBD socket its console helper serves it on.
	script := fmt.Sprintf(diskRunner, jobs)
	text := fmt.Sprintf("name = %q\ncmd = \"/bin/sh\"\nargs = [\"-c\", %q]\nmemory = 32\nmax_maps = 8192\ngrant_frames = 16\ndisks = [%q]\n", name, script, disk)
	// A cluster just started may not have the disk host's driver domain
	// yet (its agent makes it as it starts): wait for it a while.
	var d api.Domain
	var err error
	for wait := time.Now().Add(30 * time.Second); ; {
		d, err = c.CreateDomain(ctx, api.DomainSpec{Config: text, Node: cfg.Hosts[0]})
		if err == nil || !strings.Contains(err.Error(), "no driver domain running") || time.Now().After(wait) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", name, err)
	}
	id := strconv.Itoa(int(d.ID))
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.DestroyDomain(ctx, id)
	}
	fail := func(err error) ([]diskPath, func(), error) {
		stop()
		return nil, nil, fmt.Errorf("domain %s (id %d on %s): %w", name, d.ID, d.Host, err)
	}
	var sock string
	deadline := time.Now().Add(60 * time.Second)
	for sock == "" {
		ds, err := c.Disks(ctx, id)
		if err != nil {
			return fail(err)
		}
		for _, x := range ds {
			if x.Dev == "xvda" {
				sock = x.Socket
			}
		}
		if sock != "" {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("no socket for its disk xvda within 60 s: %+v", ds))
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := waitNBD(ctx, "unix", sock, nil, time.Until(deadline)+5*time.Second); err != nil {
		return fail(fmt.Errorf("its disk xvda: %w", err))
	}
	n := "shi disk"
	if cfg.remote() {
		n = "shi remote disk"
	}
	paths := []diskPath{{name: n, uri: "nbd+unix:///xvda?socket=" + sock, jobs: jobs}}
	if !cfg.remote() {
		// The same disk exported over TCP by its host ("shi disk export").
		x, err := c.ExportDisk(ctx, id, "xvda", api.DiskExport{})
		if err == nil {
			err = waitNBD(ctx, "tcp", x.Export, nil, 10*time.Second)
		}
		if err != nil {
			return fail(fmt.Errorf("export its disk xvda: %w", err))
		}
		paths = append(paths, diskPath{name: "shi disk export", uri: "nbd://" + x.Export + "/xvda"})
	}
	return paths, stop, nil
}

// diskRunner is the disk domain's program (a format with the jobs
// directory): it runs each fio job put in job on its disk and leaves the
// JSON in out.json and the exit code in rc.
const diskRunner = `D=%s; while :; do if [ -f $D/job ]; then ` +
	`eval "fio --output=$D/out.tmp $(cat $D/job)" >$D/err 2>&1; echo $? >$D/rc.tmp; ` +
	`mv -f $D/out.tmp $D/out.json 2>/dev/null; rm -f $D/job; mv -f $D/rc.tmp $D/rc; fi; sleep 0.02; done`

// domainFio runs fio inside the disk domain (diskRunner) and reads its
// result. The URI argument is the domain's own, from its environment;
// the rest must pass its shell's eval unchanged.
func domainFio(ctx context.Context, jobs string, args []string) (FioResult, error) {
	var job []string
	for _, a := range args {
		if strings.HasPrefix(a, "--uri=") {
			job = append(job, `--uri="$SHI_DISK_XVDA"`) // the domain's own, expanded by its eval
			continue
		}
		if strings.ContainsAny(a, " \t\n'\"$\\`;&|<>()*?[]{}~#") {
			return FioResult{}, fmt.Errorf("fio argument %q cannot go through the domain's shell", a)
		}
		job = append(job, a)
	}
	for _, f := range []string{"rc", "out.json", "err"} {
		os.Remove(filepath.Join(jobs, f))
	}
	if err := os.WriteFile(filepath.Join(jobs, "job"), []byte(strings.Join(job, " ")+"\n"), 0o644); err != nil {
		return FioResult{}, err
	}
	for {
		rc, err := os.ReadFile(filepath.Join(jobs, "rc"))
		if err == nil {
			if strings.TrimSpace(string(rc)) != "0" {
				msg, _ := os.ReadFile(filepath.Join(jobs, "err"))
				return FioResult{}, fmt.Errorf("fio in the domain: exit %s: %s", strings.TrimSpace(string(rc)), tail(msg))
			}
			out, err := os.ReadFile(filepath.Join(jobs, "out.json"))
			if err != nil {
				return FioResult{}, err
			}
			return ParseFio(out)
		}
		select {
		case <-ctx.Done():
			return FioResult{}, fmt.Errorf("fio in the domain: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
