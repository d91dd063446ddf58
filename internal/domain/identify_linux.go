package domain

import (
	"errors"
	"fmt"
	"net"
	"os"
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
// When the agent is root, domains run under their own uids and are known
// by them (a double fork into a new session changes nothing); otherwise
// they run as the agent's user and are known by their session.
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
	return m.identifyCred(cred)
}

// identifyCred maps a peer's credentials to a domain. A domain's own uid
// (DomainUID) names it whatever its session; root and the agent's own
// user are domain 0 unless they descend from a domain's session; any
// other user is refused.
func (m *Manager) identifyCred(cred *unix.Ucred) (uint32, error) {
	if _, ok := DomainUID(0); ok && cred.Uid >= DomainUIDBase && cred.Uid < DomainUIDBase+0x7FF0 {
		d := cred.Uid - DomainUIDBase
		m.mu.RLock()
		_, running := m.running[d]
		m.mu.RUnlock()
		if !running {
			return 0, fmt.Errorf("uid %d: domain %d is not running on this host", cred.Uid, d)
		}
		return d, nil
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("uid %d is neither a domain nor the toolstack", cred.Uid)
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
