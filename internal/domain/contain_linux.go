package domain

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"time"

	"shi/internal/cgroup"
	"shi/internal/devices/console"
	"shi/internal/directory"
)

// How a domain is contained, when the agent is root and the kernel has
// the controllers (cgroup v2, or the v1 hierarchies beside it): every
// process of it lives in one cgroup of its own, from its first
// instruction, which
//
//   - caps its memory at its config's memory, everything included: its
//     processes' own memory and the shareable pages it allocates (they
//     are charged to whoever first touches them, the domain itself when
//     it fills them), with no swap beyond it. A program needs some
//     memory of its own to run at all, so the cap is never below
//     MemoryFloorMiB; the shareable pages alone stay capped at memory
//     (the hypervisor's MaxPages). A Go program is told its cap, as a
//     guest kernel knows its RAM (GOMEMLIMIT, unless its env sets one),
//     so that its collector works harder before the cap rather than
//     die at it. A domain the kernel's OOM killer strikes is crashed,
//     whole, and follows on_crash.
//   - caps its processes and threads at pids (default DefaultPids), and
//     its console helper's at console.HelperThreads more, which the
//     helper takes before the program starts: a program that fills its
//     pids never takes the console down with it.
//   - caps its CPU time at vcpus CPUs, when vcpus is set.
//   - makes "every process of the domain" exact: destroy kills the
//     group and returns once it is empty, whatever left the session.
//
// Without root or the controllers, domains run uncontained (said once in
// the log), bounded only by their session, as before.

// MemoryFloorMiB is the least memory cap a domain's cgroup gets: room
// for a program's own runtime and working set when memory is set lower
// (a Go program takes a few MiB to start; the suites' test domains,
// declared with memory = 4, keep up to tens of MiB: a disk test's model
// of its disk, 32 MiB).
const MemoryFloorMiB = 128

// goMemLimitShare is the part of the cap a Go program's runtime is told
// to stay within: the rest is for what its heap does not count (thread
// stacks, page tables, other processes of the domain, its shared pages).
const goMemLimitShare = 0.75

// oomPoll is how often a running domain's OOM kill count is read.
const oomPoll = 250 * time.Millisecond

// Usage is what a running domain uses.
type Usage = cgroup.Usage

// limitsOf are the caps of a domain with config cfg; helper says its
// console helper runs in it, whose reserve of threads (see
// console.HelperThreads) comes on top of its pids.
func limitsOf(cfg *Config, helper bool) cgroup.Limits {
	pids := cfg.Pids
	if pids == 0 {
		pids = DefaultPids
	}
	if helper {
		pids += console.HelperThreads
	}
	return cgroup.Limits{MemoryBytes: max(cfg.MemoryMiB, MemoryFloorMiB) << 20, Pids: pids, VCPUs: cfg.VCPUs}
}

// memLimitEnv tells a contained domain's Go programs its cap.
func (m *Manager) memLimitEnv(cfg *Config) []string {
	if m.cgroups() == nil {
		return nil
	}
	lim := uint64(float64(limitsOf(cfg, false).MemoryBytes) * goMemLimitShare)
	return []string{"GOMEMLIMIT=" + strconv.FormatUint(lim, 10)}
}

// cgroups is this host's directory of domain groups, made at the first
// launch; nil when domains run uncontained.
func (m *Manager) cgroups() *cgroup.Host {
	m.cgOnce.Do(func() {
		if os.Geteuid() != 0 {
			m.log.Warn("domains run uncontained (no memory, process or CPU caps): the agent is not root")
			return
		}
		h, err := cgroup.Open("shi")
		if err != nil {
			m.log.Warn("domains run uncontained (no memory, process or CPU caps)", "err", err)
			return
		}
		m.cg = h
		m.log.Info("domains contained by cgroups", "version", h.Version(), "cpu_caps", h.CapsCPU())
	})
	return m.cg
}

// newGroup makes domain d's group (helper: its console helper runs in
// it); nil when domains run uncontained.
func (m *Manager) newGroup(d directory.Domain, cfg *Config, helper bool) (*cgroup.Group, error) {
	h := m.cgroups()
	if h == nil {
		return nil, nil
	}
	return h.New("dom"+strconv.FormatUint(uint64(d.ID), 10), limitsOf(cfg, helper))
}

// start starts cmd in group g (nil: as it is).
func start(g *cgroup.Group, cmd *exec.Cmd) error {
	if g == nil {
		return cmd.Start()
	}
	return g.Start(cmd)
}

// signal SIGKILLs every process of r's domain, without waiting.
func (r *running) signal() {
	if r.group != nil {
		r.group.Signal()
		return
	}
	killSession(r.pid)
}

// reap ends what r's domain left behind once its first process has
// ended, and returns once every process is gone (when contained),
// reporting whether the OOM killer struck it.
func (m *Manager) reap(r *running) (oom bool) {
	if r.group == nil {
		killSession(r.pid)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.group.Kill(ctx); err != nil {
		m.log.Error("domain: processes left in its cgroup", "dom", r.dom.ID, "err", err)
	}
	oom = r.group.OOMKills() > 0
	if err := r.group.Remove(); err != nil {
		m.log.Warn("domain: cannot remove its cgroup", "dom", r.dom.ID, "err", err)
	}
	return oom
}

// watchOOM kills r's whole domain as soon as the OOM killer has struck
// any of its processes (cgroup v1 kills one; the rest may run on without
// the memory they counted on), until done.
func (m *Manager) watchOOM(r *running, done <-chan struct{}) {
	t := time.NewTicker(oomPoll)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if r.group.OOMKills() > 0 {
				m.log.Warn("domain out of memory: the kernel killed a process of it; killing the rest", "dom", r.dom.ID, "name", r.dom.Name)
				r.group.Signal()
				return
			}
		}
	}
}

// Usage is what running domain id of this host uses; false if it does
// not run here or runs uncontained.
func (m *Manager) Usage(id uint32) (Usage, bool) {
	m.mu.RLock()
	r := m.running[id]
	m.mu.RUnlock()
	if r == nil || r.group == nil {
		return Usage{}, false
	}
	return r.group.Usage(), true
}

// closeCgroups removes the host's directory of groups, once every domain
// is released.
func (m *Manager) closeCgroups() {
	m.cgOnce.Do(func() {})
	if m.cg != nil {
		if err := m.cg.Close(); err != nil {
			m.log.Warn("domain: cannot remove the domains' cgroup directory", "err", err)
		}
	}
}
