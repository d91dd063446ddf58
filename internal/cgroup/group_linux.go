package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host is an agent's directory of groups: "<prefix>-<pid>-<n>" under the
// agent's own cgroup, in each hierarchy used.
type Host struct {
	l    Layout
	name string
	// v2: the base directory; v1: the base directory per controller.
	base  string
	bases map[string]string
	cpu   bool     // the cpu controller can cap CPU time
	root  *os.File // another mount namespace's root the paths go through, if any
}

var hostSeq atomic.Uint64

// Open detects this process's cgroups and makes a directory for its
// groups. Directories of earlier agents with the same prefix whose
// process is gone are emptied and removed first.
//
// An agent started by "ip netns exec" (test hosts) has a mount namespace
// of its own with a fresh /sys, which hides the cgroup mounts; then they
// are reached through its parent's root, which still shows them, held
// open so that the parent may go.
func Open(prefix string) (*Host, error) {
	l, root, err := detect()
	if err != nil {
		return nil, err
	}
	h, err := OpenLayout(l, prefix)
	if err != nil {
		if root != nil {
			root.Close()
		}
		return nil, err
	}
	h.root = root
	return h, nil
}

// Sweep empties and removes the group directories with prefix of agents
// that are gone, as Open does: for whoever outlives agents killed
// without a chance to clean up (a test run's last ones).
func Sweep(prefix string) {
	if os.Geteuid() != 0 {
		return
	}
	l, root, err := detect()
	if err != nil {
		return
	}
	if root != nil {
		defer root.Close()
	}
	if l.Version == 2 {
		sweep(l.Unified, prefix, 2)
		return
	}
	for _, dir := range l.Dirs {
		sweep(dir, prefix, 1)
	}
}

// detect finds this process's layout, through its parent's root (held
// open, returned) when its own mount namespace hides the cgroup mounts.
func detect() (Layout, *os.File, error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Layout{}, nil, err
	}
	self, err := ParseSelf(cg)
	if err != nil {
		return Layout{}, nil, err
	}
	l, err := detectIn("/proc/self/mountinfo", "", self)
	if errors.Is(err, ErrNoControllers) && os.Getppid() > 1 {
		ppid := strconv.Itoa(os.Getppid())
		root, rerr := os.Open("/proc/" + ppid + "/root")
		if rerr != nil {
			return Layout{}, nil, err
		}
		pl, perr := detectIn("/proc/"+ppid+"/mountinfo", "/proc/self/fd/"+strconv.Itoa(int(root.Fd())), self)
		if perr != nil {
			root.Close()
			return Layout{}, nil, err
		}
		return pl, root, nil
	}
	return l, nil, err
}

// detectIn detects the layout from a mountinfo file, its mount points
// taken under root.
func detectIn(mountinfo, root string, self map[string]string) (Layout, error) {
	mi, err := os.ReadFile(mountinfo)
	if err != nil {
		return Layout{}, err
	}
	mounts, err := ParseMountinfo(mi)
	if err != nil {
		return Layout{}, err
	}
	for i := range mounts {
		mounts[i].Point = root + mounts[i].Point
	}
	return Detect(mounts, self, func(dir string) []string {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		return strings.Fields(string(b))
	})
}

// OpenLayout is Open with a given layout.
func OpenLayout(l Layout, prefix string) (*Host, error) {
	h := &Host{l: l, name: fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), hostSeq.Add(1))}
	if l.Version == 2 {
		if err := h.openV2(prefix); err != nil {
			return nil, err
		}
		return h, nil
	}
	h.bases = map[string]string{}
	for c, dir := range l.Dirs {
		sweep(dir, prefix, 1)
		h.bases[c] = filepath.Join(dir, h.name)
	}
	for _, dir := range h.dirs(h.bases) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			h.Close()
			return nil, err
		}
	}
	_, h.cpu = l.Dirs[CPU]
	return h, nil
}

// openV2 enables the controllers for the groups below the agent's own
// cgroup. A cgroup with processes of its own cannot hand controllers
// down (the "no internal processes" rule), so an agent alone in its
// cgroup (a service's, delegated) moves itself into a leaf first.
func (h *Host) openV2(prefix string) error {
	own := h.l.Unified
	avail, _ := os.ReadFile(filepath.Join(own, "cgroup.controllers"))
	want := []string{Memory, Pids}
	if slices.Contains(strings.Fields(string(avail)), CPU) {
		want = append(want, CPU)
		h.cpu = true
	}
	enable := func(dir string) error {
		var b strings.Builder
		for _, c := range want {
			b.WriteString(" +" + c)
		}
		return writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.TrimSpace(b.String()))
	}
	if err := enable(own); err != nil {
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		leaf := filepath.Join(own, prefix+"-agent")
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("cgroup: move the agent into %s: %w", leaf, err)
		}
		if err := enable(own); err != nil {
			return fmt.Errorf("cgroup: enable controllers in %s (other processes live there; give the agent a cgroup of its own): %w", own, err)
		}
	}
	sweep(own, prefix, 2)
	h.base = filepath.Join(own, h.name)
	if err := os.Mkdir(h.base, 0o755); err != nil {
		return err
	}
	if err := enable(h.base); err != nil {
		os.Remove(h.base)
		return err
	}
	return nil
}

// sweep removes the group directories of dead agents under dir.
func sweep(dir, prefix string, version int) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			continue
		}
		base := filepath.Join(dir, e.Name())
		subs, _ := os.ReadDir(base)
		for _, s := range subs {
			if s.IsDir() {
				g := filepath.Join(base, s.Name())
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				killDirs(ctx, []string{g}, "", version)
				cancel()
				os.Remove(g)
			}
		}
		os.Remove(base)
	}
}

// Version is the cgroup interface in use: 1 or 2.
func (h *Host) Version() int { return h.l.Version }

// CapsCPU reports whether groups' CPU time can be capped.
func (h *Host) CapsCPU() bool { return h.cpu }

// dirs lists the distinct directories of a per-controller map
// (co-mounted controllers share one).
func (h *Host) dirs(m map[string]string) []string {
	var ds []string
	for _, d := range m {
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	return ds
}

// Close removes the host's directory; its groups must be gone.
func (h *Host) Close() error {
	if h.root != nil {
		defer h.root.Close()
	}
	if h.l.Version == 2 {
		return os.Remove(h.base)
	}
	var errs []error
	for _, d := range h.dirs(h.bases) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Group is one domain's cgroup.
type Group struct {
	h    *Host
	dir  string            // v2
	dirs map[string]string // v1, per controller
}

// New makes a group with limits lim.
func (h *Host) New(name string, lim Limits) (*Group, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("cgroup: bad group name %q", name)
	}
	g := &Group{h: h}
	var err error
	if h.l.Version == 2 {
		g.dir = filepath.Join(h.base, name)
		if err = os.Mkdir(g.dir, 0o755); err != nil {
			return nil, err
		}
		err = g.limitV2(lim)
	} else {
		g.dirs = map[string]string{}
		for c, b := range h.bases {
			g.dirs[c] = filepath.Join(b, name)
		}
		for _, d := range h.dirs(g.dirs) {
			if err = os.Mkdir(d, 0o755); err != nil {
				break
			}
		}
		if err == nil {
			err = g.limitV1(lim)
		}
	}
	if err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

func (g *Group) limitV2(lim Limits) error {
	if lim.MemoryBytes > 0 {
		if err := writeFile(filepath.Join(g.dir, "memory.max"), strconv.FormatUint(lim.MemoryBytes, 10)); err != nil {
			return err
		}
		// Memory caps everything: no swap beyond it.
		if err := writeFile(filepath.Join(g.dir, "memory.swap.max"), "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		// An OOM kill takes the whole group, as a domain out of memory
		// is crashed whole.
		if err := writeFile(filepath.Join(g.dir, "memory.oom.group"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if lim.Pids > 0 {
		if err := writeFile(filepath.Join(g.dir, "pids.max"), strconv.Itoa(lim.Pids)); err != nil {
			return err
		}
	}
	if lim.VCPUs > 0 && g.h.cpu {
		if err := writeFile(filepath.Join(g.dir, "cpu.max"), fmt.Sprintf("%d %d", lim.VCPUs*cpuPeriod, cpuPeriod)); err != nil {
			return err
		}
	}
	return nil
}

func (g *Group) limitV1(lim Limits) error {
	if d := g.dirs[Memory]; lim.MemoryBytes > 0 {
		if err := writeFile(filepath.Join(d, "memory.limit_in_bytes"), strconv.FormatUint(lim.MemoryBytes, 10)); err != nil {
			return err
		}
		// memory+swap, where swap is accounted: no swap beyond it.
		if err := writeFile(filepath.Join(d, "memory.memsw.limit_in_bytes"), strconv.FormatUint(lim.MemoryBytes, 10)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if lim.Pids > 0 {
		if err := writeFile(filepath.Join(g.dirs[Pids], "pids.max"), strconv.Itoa(lim.Pids)); err != nil {
			return err
		}
	}
	if d, ok := g.dirs[CPU]; ok && lim.VCPUs > 0 {
		if err := writeFile(filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(d, "cpu.cfs_quota_us"), strconv.Itoa(lim.VCPUs*cpuPeriod)); err != nil {
			return err
		}
	}
	return nil
}

// Start starts cmd inside the group: it is in the group before its first
// instruction, so nothing it forks can be left outside. v2 clones it
// straight into the group (CLONE_INTO_CGROUP). v1 has no such clone: the
// forking thread, locked to its goroutine, joins the group for the fork
// (v1 places threads one by one) and goes back after.
func (g *Group) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if g.h.l.Version == 2 {
		fd, err := unix.Open(g.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = fd
		return cmd.Start()
	}
	runtime.LockOSThread()
	tid := strconv.Itoa(unix.Gettid())
	back := func() error {
		var errs []error
		for _, c := range v1Controllers {
			if d, ok := g.h.l.Dirs[c]; ok {
				if err := writeFile(filepath.Join(d, "tasks"), tid); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	}
	for _, d := range g.h.dirs(g.dirs) {
		if err := writeFile(filepath.Join(d, "tasks"), tid); err != nil {
			if back() == nil {
				runtime.UnlockOSThread()
			}
			return fmt.Errorf("cgroup: join %s: %w", d, err)
		}
	}
	err := cmd.Start()
	if back() == nil {
		runtime.UnlockOSThread()
	}
	// Else the thread stays locked: the runtime ends it with its
	// goroutine rather than let it work for the agent inside a domain's
	// group.
	return err
}

// procsDir is where the group's processes are listed.
func (g *Group) procsDir() string {
	if g.h.l.Version == 2 {
		return g.dir
	}
	return g.dirs[Pids]
}

// Procs lists the group's processes.
func (g *Group) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(g.procsDir(), "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	return parsePids(b)
}

// Signal SIGKILLs every process of the group, without waiting.
func (g *Group) Signal() {
	if g.h.l.Version == 2 {
		if writeFile(filepath.Join(g.dir, "cgroup.kill"), "1") == nil {
			return
		}
	}
	killOnce(g.procsDir(), g.dirs[Freezer])
}

// Kill SIGKILLs every process of the group and returns once none is
// left, or with ctx's error.
func (g *Group) Kill(ctx context.Context) error {
	if g.h.l.Version == 2 {
		return killDirs(ctx, []string{g.dir}, "", 2)
	}
	return killDirs(ctx, []string{g.dirs[Pids]}, g.dirs[Freezer], 1)
}

// killDirs empties the groups at dirs (their cgroup.procs). v2 uses
// cgroup.kill (Linux 5.14); v1 freezes the group (when a freezer is
// mounted) so that nothing forks while it is being killed, then kills
// what is listed until nothing is.
func killDirs(ctx context.Context, dirs []string, freezer string, version int) error {
	for _, d := range dirs {
		if version == 2 {
			writeFile(filepath.Join(d, "cgroup.kill"), "1")
		}
		killOnce(d, freezer)
	}
	wait := time.Millisecond
	for {
		left := 0
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			ps, _ := parsePids(b)
			for _, p := range ps {
				unix.Kill(p, unix.SIGKILL)
			}
			left += len(ps)
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup: %d processes left: %w", left, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// killOnce kills what the group at dir lists, frozen while it does when
// freezer names its v1 freezer group.
func killOnce(dir, freezer string) {
	if freezer != "" && writeFile(filepath.Join(freezer, "freezer.state"), "FROZEN") == nil {
		defer writeFile(filepath.Join(freezer, "freezer.state"), "THAWED")
		for i := 0; i < 100; i++ {
			if b, _ := os.ReadFile(filepath.Join(freezer, "freezer.state")); strings.TrimSpace(string(b)) != "FREEZING" {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	ps, _ := parsePids(b)
	for _, p := range ps {
		unix.Kill(p, unix.SIGKILL)
	}
}

// OOMKills is how many processes of the group the OOM killer has killed.
func (g *Group) OOMKills() uint64 {
	var b []byte
	if g.h.l.Version == 2 {
		b, _ = os.ReadFile(filepath.Join(g.dir, "memory.events"))
	} else {
		b, _ = os.ReadFile(filepath.Join(g.dirs[Memory], "memory.oom_control"))
	}
	n, _ := parseKeyed(b, "oom_kill")
	return n
}

// ForksRefused is how many forks pids.max has refused in the group.
func (g *Group) ForksRefused() uint64 {
	d := g.dir
	if g.h.l.Version == 1 {
		d = g.dirs[Pids]
	}
	b, _ := os.ReadFile(filepath.Join(d, "pids.events"))
	n, _ := parseKeyed(b, "max")
	return n
}

// Usage reads what the group uses now.
func (g *Group) Usage() Usage {
	var u Usage
	if g.h.l.Version == 2 {
		if b, err := os.ReadFile(filepath.Join(g.dir, "memory.current")); err == nil {
			u.MemoryBytes, _ = parseUint(b)
		}
		if b, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat")); err == nil {
			us, _ := parseKeyed(b, "usage_usec")
			u.CPUNanos = us * 1000
		}
		return u
	}
	if b, err := os.ReadFile(filepath.Join(g.dirs[Memory], "memory.usage_in_bytes")); err == nil {
		u.MemoryBytes, _ = parseUint(b)
	}
	if d, ok := g.dirs[CPUAcct]; ok {
		if b, err := os.ReadFile(filepath.Join(d, "cpuacct.usage")); err == nil {
			u.CPUNanos, _ = parseUint(b)
		}
	}
	return u
}

// Remove removes the group, which must be empty (Kill).
func (g *Group) Remove() error {
	if g.h.l.Version == 2 {
		if err := os.Remove(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	var errs []error
	for _, d := range g.h.dirs(g.dirs) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeFile writes a control file, which must exist.
func writeFile(name, s string) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
