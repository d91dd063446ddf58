// Package cgroup contains a domain's processes: one control group per
// domain caps its memory, processes and CPU, kills every process in it
// at once, and counts what it uses and how often the kernel's OOM killer
// struck in it.
//
// Both kernel interfaces are supported, because hosts mount either: the
// unified hierarchy (cgroup v2) with the memory, pids and cpu controllers,
// or the older per-controller hierarchies (cgroup v1: memory, pids, cpu,
// cpuacct, freezer), possibly beside an empty v2 mount, as Debian 12 on
// some kernels and this project's own machines do. Detect decides which
// from /proc/self/mountinfo and /proc/self/cgroup; the pure parsing here
// is separate from the file operations (group_linux.go) so that it can be
// tested on any text.
//
// The groups of an agent live under the agent's own cgroup, in a
// directory of its own (as a process given a delegated subtree does), so
// whoever contains the agent also contains its domains.
package cgroup

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// The v1 controllers used; memory and pids are required, the rest are
// used when mounted.
const (
	Memory  = "memory"
	Pids    = "pids"
	CPU     = "cpu"
	CPUAcct = "cpuacct"
	Freezer = "freezer"
)

var v1Controllers = []string{Memory, Pids, CPU, CPUAcct, Freezer}

// Mount is one line of /proc/self/mountinfo that matters here.
type Mount struct {
	Root   string // the path inside the filesystem mounted
	Point  string // where it is mounted
	FSType string
	Super  []string // super options: a v1 hierarchy's controllers
}

// ParseMountinfo reads /proc/PID/mountinfo text: "id parent maj:min root
// point options [optional...] - fstype source super".
func ParseMountinfo(b []byte) ([]Mount, error) {
	var ms []Mount
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+3 > len(f) {
			return nil, fmt.Errorf("mountinfo line %d: malformed", n+1)
		}
		root, err1 := unescapeOctal(f[3])
		point, err2 := unescapeOctal(f[4])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n+1, err)
		}
		m := Mount{Root: root, Point: point, FSType: f[sep+1]}
		if sep+3 < len(f) {
			m.Super = strings.Split(f[sep+3], ",")
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline
// and backslash in mountinfo paths.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// ParseSelf reads /proc/PID/cgroup text ("id:controllers:path" lines)
// into each controller's path; the unified hierarchy's ("0::path") is
// under the key "".
func ParseSelf(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		id, rest, ok1 := strings.Cut(line, ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("cgroup line %d: malformed", n+1)
		}
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return nil, fmt.Errorf("cgroup line %d: malformed id", n+1)
		}
		if ctrls == "" {
			out[""] = path.Clean(p)
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			out[c] = path.Clean(p)
		}
	}
	return out, nil
}

// Layout is where this process's cgroups are: the directories under
// which its domains' groups are made.
type Layout struct {
	Version int // 2 (unified) or 1 (per controller)
	// Unified is the process's own cgroup directory (v2).
	Unified string
	// Dirs maps each mounted v1 controller to the process's own cgroup
	// directory in its hierarchy; co-mounted controllers share one.
	Dirs map[string]string
}

// ErrNoControllers means neither interface offers what containment needs.
var ErrNoControllers = errors.New("cgroup: no memory and pids controllers (neither cgroup v2 with them nor cgroup v1 hierarchies)")

// Detect finds the layout from mountinfo and the process's cgroup file.
// v2 is preferred when its mount's controllers (read by the caller from
// the process's own cgroup.controllers, given as v2Controllers) include
// memory and pids; otherwise the v1 hierarchies of memory and pids.
func Detect(mounts []Mount, self map[string]string, v2Controllers func(dir string) []string) (Layout, error) {
	for _, m := range mounts {
		if m.FSType != "cgroup2" {
			continue
		}
		p, ok := self[""]
		if !ok {
			continue
		}
		dir, ok := under(m, p)
		if !ok {
			continue
		}
		cs := v2Controllers(dir)
		if contains(cs, Memory) && contains(cs, Pids) {
			return Layout{Version: 2, Unified: dir}, nil
		}
	}
	l := Layout{Version: 1, Dirs: map[string]string{}}
	for _, m := range mounts {
		if m.FSType != "cgroup" {
			continue
		}
		for _, c := range v1Controllers {
			if !contains(m.Super, c) {
				continue
			}
			if p, ok := self[c]; ok {
				if dir, ok := under(m, p); ok {
					l.Dirs[c] = dir
				}
			}
		}
	}
	if l.Dirs[Memory] == "" || l.Dirs[Pids] == "" {
		return Layout{}, ErrNoControllers
	}
	return l, nil
}

// under maps a cgroup path to its directory in mount m; a mount of a
// subtree (a namespace's) only holds paths below its root.
func under(m Mount, p string) (string, bool) {
	rel, ok := strings.CutPrefix(p, m.Root)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && m.Root != "/") {
		return "", false
	}
	return path.Join(m.Point, rel), true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Limits are what a group may use.
type Limits struct {
	MemoryBytes uint64 // 0: no cap
	Pids        int    // 0: no cap
	VCPUs       int    // CPU time, in whole CPUs; 0: no cap
}

// cpuPeriod is the CFS period the CPU cap is expressed in (µs).
const cpuPeriod = 100000

// Usage is what a group has used.
type Usage struct {
	MemoryBytes uint64 // memory now charged to it
	CPUNanos    uint64 // CPU time since it was made
}

// parseKeyed returns key's value in "key value" lines (memory.events,
// cpu.stat, memory.oom_control).
func parseKeyed(b []byte, key string) (uint64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// parseUint reads a file holding one number.
func parseUint(b []byte) (uint64, error) {
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// parsePids reads cgroup.procs: one pid a line.
func parsePids(b []byte) ([]int, error) {
	var ps []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("cgroup.procs: bad pid %q", f)
		}
		ps = append(ps, p)
	}
	return ps, nil
}
