package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Conformance with real NBD clients: libnbd's nbdinfo and nbdcopy, and
// QEMU's qemu-img and qemu-io (scripts/deps.sh installs libnbd-bin and
// qemu-utils).

const toolDisk = 8 << 20

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (scripts/deps.sh installs it): %v", name, err)
	}
}

// toolServer serves a sparse image (and a read-only copy named "ro") on a
// Unix socket and on TCP loopback; it returns the image path and the two
// URI prefixes (append the export name).
func toolServer(t *testing.T) (img, unixURI, tcpURI string) {
	t.Helper()
	dir := t.TempDir()
	img = filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, toolDisk); err != nil {
		t.Fatal(err)
	}
	rw, err := OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := OpenFile(img, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Export{Name: "xvda", Description: "scratch disk", Backend: rw}, Export{Name: "ro", Backend: ro})
	if err != nil {
		t.Fatal(err)
	}
	s.Logf = t.Logf
	sock := filepath.Join(dir, "nbd.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, ln := range []net.Listener{ul, tl} {
		go func() { s.Serve(ctx, ln); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		rw.Close()
		ro.Close()
	})
	return img, "nbd+unix:///%s?socket=" + sock, "nbd://" + tl.Addr().String() + "/%s"
}

func uri(format, export string) string {
	if strings.Contains(format, "?") {
		i := strings.Index(format, "?")
		return fmt.Sprintf(format[:i], export) + format[i:]
	}
	return fmt.Sprintf(format, export)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestNBDInfo(t *testing.T) {
	needTool(t, "nbdinfo")
	img, u, _ := toolServer(t)

	var info struct {
		Exports []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Size        int64    `json:"export-size"`
			ReadOnly    bool     `json:"is_read_only"`
			CanTrim     bool     `json:"can_trim"`
			CanZero     bool     `json:"can_zero"`
			CanFUA      bool     `json:"can_fua"`
			CanFlush    bool     `json:"can_flush"`
			Structured  bool     `json:"protocol-structured-replies"`
			Contexts    []string `json:"contexts"`
			MaxBlock    int64    `json:"block_size_maximum"`
		} `json:"exports"`
	}
	out := run(t, "nbdinfo", "--json", uri(u, "xvda"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	e := info.Exports[0]
	if e.Name != "xvda" || e.Size != toolDisk || e.ReadOnly || !e.CanTrim || !e.CanZero || !e.CanFUA || !e.CanFlush ||
		e.MaxBlock != MaxPayload || len(e.Contexts) != 1 || e.Contexts[0] != metaBaseAllocation {
		t.Fatalf("nbdinfo: %+v\n%s", e, out)
	}

	out = run(t, "nbdinfo", "--list", "--json", uri(u, ""))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 2 ||
		info.Exports[0].Name != "xvda" || info.Exports[0].Description != "scratch disk" ||
		info.Exports[1].Name != "ro" || !info.Exports[1].ReadOnly {
		t.Fatalf("nbdinfo --list: %v %+v\n%s", err, info, out)
	}

	// Data at 1 MiB..1 MiB+64 KiB, the rest a hole.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xaa}, 64<<10), 1<<20)
	f.Close()
	out = run(t, "nbdinfo", "--map", uri(u, "xvda"))
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		got = append(got, strings.Join(strings.Fields(l), " "))
	}
	want := []string{
		"0 1048576 3 hole,zero",
		"1048576 65536 0 data",
		fmt.Sprintf("1114112 %d 3 hole,zero", toolDisk-1114112),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("nbdinfo --map:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}

func TestNBDCopy(t *testing.T) {
	needTool(t, "nbdcopy")
	_, u, tcp := toolServer(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	b := make([]byte, toolDisk)
	rand.Read(b[:3<<20])
	rand.Read(b[5<<20:])
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, dst := range []string{uri(u, "xvda"), uri(tcp, "xvda")} {
		run(t, "nbdcopy", src, dst)
		back := filepath.Join(dir, fmt.Sprintf("back%d.img", i))
		run(t, "nbdcopy", dst, back)
		if fileSum(t, back) != sha256.Sum256(b) {
			t.Fatalf("nbdcopy round trip through %s differs", dst)
		}
	}
}

func TestQemuImgConvert(t *testing.T) {
	needTool(t, "qemu-img")
	img, u, tcp := toolServer(t)
	b := make([]byte, toolDisk)
	rand.Read(b[1<<20 : 2<<20])
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, src := range []string{uri(u, "xvda"), uri(tcp, "ro")} {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("out%d.img", i))
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", src, out)
		if fileSum(t, out) != sha256.Sum256(b) {
			t.Fatalf("qemu-img convert from %s differs", src)
		}
	}
}

func TestQemuIO(t *testing.T) {
	needTool(t, "qemu-io")
	img, u, tcp := toolServer(t)
	for _, base := range []string{u, tcp} {
		target := uri(base, "xvda")
		out := run(t, "qemu-io", "-f", "raw",
			"-c", "write -P 0xab 0 256k",
			"-c", "write -f -P 0xcd 256k 64k", // FUA
			"-c", "flush",
			"-c", "read -P 0xab 0 256k",
			"-c", "read -P 0xcd 256k 64k",
			"-c", "discard 0 128k",
			"-c", "read -P 0 0 128k",
			"-c", "write -z 128k 64k",
			"-c", "read -P 0 128k 64k",
			"-c", "write -z -u 192k 64k", // may unmap
			"-c", "read -P 0 192k 64k",
			"-c", "read -P 0xcd 256k 64k",
			target)
		if strings.Contains(out, "error") || strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("qemu-io on %s:\n%s", target, out)
		}
		// What qemu-io wrote is in the file.
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:256<<10], make([]byte, 256<<10)) || !bytes.Equal(b[256<<10:320<<10], bytes.Repeat([]byte{0xcd}, 64<<10)) {
			t.Fatalf("image after qemu-io on %s differs", target)
		}
		// The discard punched a hole in the image.
		f, err := OpenFile(img, true)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := f.Extents(0, 128<<10)
		f.Close()
		if err != nil || len(ext) != 1 || !ext[0].Hole {
			t.Fatalf("after discard through %s: extents %+v, %v", target, ext, err)
		}
		// qemu-io fails on a wrong pattern, so the checks above bite.
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0x11 256k 4k", target).CombinedOutput(); err == nil || !strings.Contains(string(out), "Pattern verification failed") {
			t.Fatalf("qemu-io did not notice a wrong pattern: %v\n%s", err, out)
		}
		// The read-only export is advertised so: qemu refuses to open it for
		// writing, and reads it.
		run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xcd 256k 64k", uri(base, "ro"))
		out2, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", uri(base, "ro")).CombinedOutput()
		if err == nil || !strings.Contains(string(out2), "Permission denied") {
			t.Fatalf("qemu-io write to read-only export: %v\n%s", err, out2)
		}
	}
}
