package evtchn

import (
	"errors"
	"fmt"
	"syscall"

	"shi/guest/hv"
	"shi/internal/hypercall"
)

// DomainExists reports whether domain dom is alive, on this host or
// another, as the hypervisor tells any caller: EVTCHNOP_status of one of
// dom's ports fails with ESRCH when there is no such domain, and
// otherwise answers, or refuses with EPERM a caller that may not look at
// another domain's ports. Port 0 is asked about: every domain has it
// (reserved), so the answer never depends on its ports. What
// libxenctrl's xc_domain_getinfo needs, for an unprivileged domain that
// cannot read another's XenStore home.
func DomainExists(c *hv.Conn, dom DomID) (bool, error) {
	_, fds, err := c.Call(hypercall.Msg{Op: hypercall.OpEvtchnStatus, Dom: uint16(dom), Port: 0})
	closeFDs(fds)
	switch {
	case err == nil, errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EINVAL):
		return true, nil
	case errors.Is(err, syscall.ESRCH):
		return false, nil
	}
	return false, fmt.Errorf("evtchn: status of dom%d: %w", dom, err)
}
