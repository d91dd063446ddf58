package domain

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxAncestors bounds the walk up a peer's parents.
const maxAncestors = 64

// Identify names the domain a XenStore connection acts for: the domain
// whose session the peer process (SO_PEERCRED) belongs to, or whose
// domain process it descends from (a child that started a session of its
// own); any other local process is domain 0. Pass it as the XenStore
// server's Identify.
//
// Domains run as the agent's user: one that is root could still escape
// by double-forking into a new session. Running domains under their own
// uids is what makes this airtight (a later step).
func (m *Manager) Identify(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, nil // not a Unix socket: an in-process client
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		if errors.Is(cerr, unix.EOPNOTSUPP) || errors.Is(cerr, unix.ENOPROTOOPT) {
			return 0, nil
		}
		return 0, cerr
	}
	return m.identifyPid(int(cred.Pid)), nil
}

// identifyPid maps a process to its domain (0 if none).
func (m *Manager) identifyPid(pid int) uint32 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.sessions) == 0 {
		return 0
	}
	if sid, err := unix.Getsid(pid); err == nil {
		if d, ok := m.sessions[sid]; ok {
			return d
		}
	}
	for range maxAncestors {
		if d, ok := m.sessions[pid]; ok {
			return d
		}
		st, err := readStat(pid)
		if err != nil || st.ppid <= 1 {
			return 0
		}
		if d, ok := m.sessions[st.session]; ok {
			return d
		}
		pid = st.ppid
	}
	return 0
}
