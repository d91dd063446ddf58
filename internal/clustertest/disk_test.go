package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shi/api"
	"shi/guest/blkfront"
	"shi/guest/hv"
	"shi/guest/xs"
	"shi/internal/domain/domaintest"
)

func init() {
	domaintest.Register("disk-model", diskModel)
	domaintest.Register("disk-durable", diskDurable)
	domaintest.Register("disk-ro", diskReadOnly)
}

const diskSize = 32 << 20

// openDisk opens the domain's xvda with the guest library.
func openDisk() (*blkfront.Disk, *xs.Client, error) {
	hvc, err := hv.Self()
	if err != nil {
		return nil, nil, err
	}
	xsc, err := xs.OpenEnv()
	if err != nil {
		return nil, nil, err
	}
	d, err := blkfront.Open(hvc, xsc, "xvda")
	if err != nil {
		return nil, nil, err
	}
	if d.Size() != diskSize || d.SectorSize() != 512 {
		return nil, nil, fmt.Errorf("disk: size %d, sector %d; want %d, 512", d.Size(), d.SectorSize(), diskSize)
	}
	return d, xsc, nil
}

// diskModel does random reads and writes (up to 128 KiB: indirect
// segments) from several goroutines, each on its own eighth of the disk,
// and checks every read against an in-memory model of the disk.
func diskModel() error {
	d, _, err := openDisk()
	if err != nil {
		return err
	}
	defer d.Close()
	const workers = 8
	part := int64(diskSize / workers)
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			model := make([]byte, part)
			base := int64(w) * part
			buf := make([]byte, 128<<10)
			for range 300 {
				n := (1 + r.IntN(256)) * 512
				off := r.Int64N((part-int64(n))/512) * 512
				if r.IntN(2) == 0 {
					p := buf[:n]
					for i := range p {
						p[i] = byte(r.Uint32())
					}
					if _, err := d.WriteAt(p, base+off); err != nil {
						errc <- fmt.Errorf("write %d at %d: %w", n, base+off, err)
						return
					}
					copy(model[off:], p)
				} else {
					p := buf[:n]
					if _, err := d.ReadAt(p, base+off); err != nil {
						errc <- fmt.Errorf("read %d at %d: %w", n, base+off, err)
						return
					}
					if !bytes.Equal(p, model[off:off+int64(n)]) {
						errc <- fmt.Errorf("read %d at %d: not what was written", n, base+off)
						return
					}
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			return err
		}
	}
	if err := d.Flush(); err != nil {
		return err
	}
	if err := d.Discard(0, 1<<20); err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	fmt.Println("disk model ok")
	return nil
}

// durablePattern is what disk-durable writes at durableOff.
func durablePattern() []byte {
	p := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(42, 42))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

const durableOff = 4 << 20

// diskDurable writes a pattern, flushes, says so in data/flushed, and
// then reads until its back end goes: the read must fail with EIO
// (recorded in data/eio), not hang.
func diskDurable() error {
	d, xsc, err := openDisk()
	if err != nil {
		return err
	}
	if _, err := d.WriteAt(durablePattern(), durableOff); err != nil {
		return err
	}
	if err := d.Flush(); err != nil {
		return err
	}
	home := fmt.Sprintf("/local/domain/%d/data/", mustDomID())
	if err := xsc.Write(home+"flushed", []byte("1")); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		_, err := d.ReadAt(buf, 0)
		if err != nil {
			if !errors.Is(err, syscall.EIO) {
				return fmt.Errorf("read after the back end went: %v, want EIO", err)
			}
			fmt.Println("disk: EIO:", err)
			xsc.Write(home+"eio", []byte(err.Error()))
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustDomID() uint32 {
	n, _ := strconv.ParseUint(os.Getenv("SHI_DOMID"), 10, 32)
	return uint32(n)
}

// diskReadOnly checks that a mode=r disk reads and refuses writes.
func diskReadOnly() error {
	d, _, err := openDisk()
	if err != nil {
		return err
	}
	defer d.Close()
	if !d.ReadOnly() {
		return errors.New("a mode=r disk is not read-only")
	}
	buf := make([]byte, 4096)
	if _, err := d.ReadAt(buf, 0); err != nil {
		return err
	}
	if _, err := d.WriteAt(buf, 0); err == nil {
		return errors.New("a write to a read-only disk succeeded")
	}
	fmt.Println("read-only disk refuses writes")
	return nil
}

// image makes a sparse raw image of diskSize bytes.
func image(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDisk: front ends on h0, back ends on h1, across the test network.
func TestDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test hosts need root")
	}
	for _, tool := range []string{"qemu-io", "nbdinfo", "nbdcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (scripts/deps.sh installs it)", tool)
		}
	}
	c := Start(t, Options{Hosts: 3})
	h0, h1, h2 := c.Host(0), c.Host(1), c.Host(2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitDrivers(t, ctx, c)
	dir := t.TempDir()
	disk := func(img string, extra string) string {
		return fmt.Sprintf("disks = [\"host=%s,path=%s,dev=xvda%s\"]", h1.Name, img, extra)
	}

	t.Run("model", func(t *testing.T) {
		img := image(t, dir, "model.img")
		d := createOn(t, ctx, h0, domaintest.Config("model", "disk-model", nil, disk(img, "")))
		// Its back end is h1's driver domain.
		be, err := domaintest.WaitRead(h0.XS(), fmt.Sprintf("/local/domain/%d/device/vbd/51712/backend", d.ID), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		drv := driverOf(t, ctx, h0, h1.Name)
		if want := fmt.Sprintf("/local/domain/%d/backend/vbd/%d/51712", drv, d.ID); string(be) != want {
			t.Fatalf("back end %s, want %s (h1's driver domain)", be, want)
		}
		expectExit0(t, []*Host{h0}, d)
	})

	t.Run("plain programs", func(t *testing.T) {
		// qemu-io and nbdinfo, inside a domain on h0, on its disk
		// served from h1, through SHI_DISK_XVDA.
		img := image(t, dir, "plain.img")
		script := `set -e; echo "uri=$SHI_DISK_XVDA"; ` +
			`qemu-io -f raw -c 'write -P 0x5a 65536 1M' -c flush -c 'read -P 0x5a 65536 1M' "$SHI_DISK_XVDA"; ` +
			`nbdinfo --size "$SHI_DISK_XVDA"; test "$(nbdcopy "$SHI_DISK_XVDA" - | wc -c)" = ` + strconv.Itoa(diskSize) + `; echo PLAIN-OK`
		d := createOn(t, ctx, h0, fmt.Sprintf("name = \"plain\"\ncmd = \"/bin/sh\"\nargs = [\"-c\", %q]\n%s\n", script, disk(img, "")))
		o := waitEnd(t, h0, d, time.Minute)
		out := strings.Join(o.Lines, "\n")
		t.Logf("the domain said:\n%s", out)
		if o.Exit != "exit code 0" || !strings.Contains(out, "PLAIN-OK") || !strings.Contains(out, strconv.Itoa(diskSize)) {
			t.Fatalf("plain program: %s\n%s", o.Exit, out)
		}
		got, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[65536:65536+1<<20], bytes.Repeat([]byte{0x5a}, 1<<20)) {
			t.Fatal("the image on h1 does not hold what qemu-io wrote on h0")
		}
	})

	t.Run("read-only", func(t *testing.T) {
		img := image(t, dir, "ro.img")
		d := createOn(t, ctx, h0, domaintest.Config("ro", "disk-ro", nil, disk(img, ",mode=r")))
		expectExit0(t, []*Host{h0}, d)
		// Through NBD too.
		script := `qemu-io -f raw -c 'write 0 4k' "$SHI_DISK_XVDA" && echo WROTE; echo DONE`
		d = createOn(t, ctx, h0, fmt.Sprintf("name = \"ro2\"\ncmd = \"/bin/sh\"\nargs = [\"-c\", %q]\n%s\n", script, disk(img, ",mode=r")))
		o := waitEnd(t, h0, d, time.Minute)
		if out := strings.Join(o.Lines, "\n"); strings.Contains(out, "WROTE") || !strings.Contains(out, "DONE") {
			t.Fatalf("a read-only disk took a write through NBD:\n%s", out)
		}
	})

	t.Run("export", func(t *testing.T) {
		img := image(t, dir, "export.img")
		if err := os.WriteFile(img+".src", bytes.Repeat([]byte("shi-disk"), diskSize/8), 0o644); err != nil {
			t.Fatal(err)
		}
		d := createOn(t, ctx, h0, fmt.Sprintf("name = \"exp\"\ncmd = \"/bin/sleep\"\nargs = [\"600\"]\n%s\n", disk(img, "")))
		var e api.Disk
		eventually(t, 20*time.Second, "the export", func() (err error) {
			e, err = h2.API.ExportDisk(ctx, "exp", "xvda", api.DiskExport{}) // through another host
			return err
		})
		if e.Export != h0.IP+":10809" {
			t.Fatalf("export address %q, want %s:10809", e.Export, h0.IP)
		}
		uri := "nbd://" + e.Export + "/xvda"
		// From h2's network: qemu-img convert onto it, nbdinfo --map, nbdcopy back.
		run := func(name string, args ...string) string {
			out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.NS.Host(2).NS, name}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img+".src", uri)
		if m := run("nbdinfo", "--map", uri); !strings.Contains(m, "data") {
			t.Fatalf("nbdinfo --map: %s", m)
		}
		run("nbdcopy", uri, img+".back")
		a, _ := os.ReadFile(img + ".src")
		b, _ := os.ReadFile(img + ".back")
		if !bytes.Equal(a, b) {
			t.Fatal("nbdcopy from the export is not what qemu-img convert wrote to it")
		}
		if err := h0.API.UnexportDisk(ctx, "exp", "xvda"); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.NS.Host(2).NS, "nbdinfo", uri).CombinedOutput(); err == nil {
			t.Fatalf("nbdinfo after unexport: %s", out)
		}
		if err := h0.API.DestroyDomain(ctx, strconv.Itoa(int(d.ID))); err != nil {
			t.Fatal(err)
		}

		// export= in the config: served from the start, gone with the domain.
		addr := h0.IP + ":10811"
		d = createOn(t, ctx, h0, fmt.Sprintf("name = \"exp2\"\ncmd = \"/bin/sleep\"\nargs = [\"600\"]\n%s\n", disk(img, ",export="+addr)))
		eventually(t, 20*time.Second, "the config's export", func() error {
			out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.NS.Host(2).NS, "nbdinfo", "--size", "nbd://"+addr+"/xvda").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(diskSize) {
				return fmt.Errorf("nbdinfo: %v %s", err, out)
			}
			return nil
		})
		if err := h0.API.DestroyDomain(ctx, strconv.Itoa(int(d.ID))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the export to end with its domain", func() error {
			if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.NS.Host(2).NS, "nbdinfo", "nbd://"+addr+"/xvda").CombinedOutput(); err == nil {
				return fmt.Errorf("still served: %s", out)
			}
			return nil
		})
	})

	t.Run("back end killed", func(t *testing.T) {
		img := image(t, dir, "durable.img")
		d := createOn(t, ctx, h0, domaintest.Config("durable", "disk-durable", nil, disk(img, "")))
		if _, err := domaintest.WaitRead(h0.XS(), fmt.Sprintf("/local/domain/%d/data/flushed", d.ID), time.Minute); err != nil {
			t.Fatal(err)
		}
		// One writer: the image is in use.
		_, err := h2.API.CreateDomain(ctx, api.DomainSpec{Config: domaintest.Config("second", "disk-model", nil, disk(img, ",mode=r")), Node: h2.Name})
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("a second domain on a disk served writable: %v", err)
		}
		h1.Kill()
		got, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[durableOff:durableOff+1<<20], durablePattern()) {
			t.Fatal("a flushed write is not in the image after its back end was killed")
		}
		start := time.Now()
		o := waitEnd(t, h0, d, time.Minute)
		if o.Exit != "exit code 0" || !strings.Contains(strings.Join(o.Lines, "\n"), "disk: EIO") {
			t.Fatalf("front end after its back end's host died: %s\n%s", o.Exit, strings.Join(o.Lines, "\n"))
		}
		t.Logf("front end saw EIO %v after the kill", time.Since(start).Round(time.Millisecond))
	})
}

// driverOf is the domid of host's driver domain, read through h.
func driverOf(t *testing.T, ctx context.Context, h *Host, host string) uint32 {
	t.Helper()
	ks, err := h.XS().Directory("/local/domain")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if v, err := h.XS().Read("/local/domain/" + k + "/name"); err == nil && string(v) == "driver-"+host {
			n, _ := strconv.ParseUint(k, 10, 32)
			return uint32(n)
		}
	}
	t.Fatalf("no driver domain of %s", host)
	return 0
}
