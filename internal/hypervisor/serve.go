package hypervisor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"shi/internal/hypercall"
	"shi/internal/shm"
)

// serve reads d's requests until its connection ends.
func (h *Hypervisor) serve(d *vdom) {
	defer close(d.done)
	buf := make([]byte, hypercall.MaxMsg)
	for {
		for d.out.pending() >= replyBacklog && !d.out.isDead() {
			<-d.out.room
		}
		if d.out.isDead() {
			return
		}
		n, fds, err := shm.RecvMsg(d.conn, buf, hypercall.MaxFDs)
		if err != nil {
			if errors.Is(err, shm.ErrTooManyFDs) || errors.Is(err, shm.ErrTruncated) {
				h.malformed(d, buf[:n], err)
				continue
			}
			return // closed, by the domain or by RemoveDomain
		}
		if n == 0 {
			return // orderly shutdown (an empty packet reads the same)
		}
		m, err := hypercall.Decode(buf[:n])
		if err != nil {
			closeFDs(fds)
			h.malformed(d, buf[:n], err)
			continue
		}
		if len(fds) > hypercall.RequestFDs(m.Op) {
			closeFDs(fds)
			h.replyError(d, m, errorf(syscall.EINVAL, "%d unexpected descriptors", len(fds)))
			continue
		}
		h.handle(d, m, fds)
	}
}

// malformed answers a message that could not be decoded, echoing its id
// if it has one.
func (h *Hypervisor) malformed(d *vdom, b []byte, err error) {
	var m hypercall.Msg
	if len(b) >= 4 {
		m.ID = binary.LittleEndian.Uint32(b)
	}
	h.replyError(d, m, fmt.Errorf("malformed request (%d bytes): %w: %w", len(b), err, syscall.EINVAL))
}

func (h *Hypervisor) replyError(d *vdom, m hypercall.Msg, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refuseLocked(d, m, err)
	r := hypercall.Msg{ID: m.ID, Op: m.Op, Errno: uint32(errnoOf(err))}
	d.out.push(r.Append(nil), nil)
}

// Log rate limiting: a hostile domain must not flood the agent's log.
const (
	logBurst = 20   // failures logged per domain before throttling
	logEvery = 1000 // then one in this many
)

// refuseLocked logs a refused or malformed request, naming the domain.
// Preconditions: h.mu held.
func (h *Hypervisor) refuseLocked(d *vdom, m hypercall.Msg, err error) {
	d.errs++
	switch {
	case d.errs <= logBurst || d.errs%logEvery == 0:
		d.log.Warn("hypervisor: request refused", "op", m.Op.String(), "err", err, "failures", d.errs)
	case d.errs == logBurst+1:
		d.log.Warn("hypervisor: further refused requests of this domain are logged 1 in 1000", "failures", d.errs)
	}
}

func errorf(e syscall.Errno, format string, args ...any) error {
	return fmt.Errorf("hypervisor: "+format+": %w", append(args, e)...)
}

// errnoOf maps an error to the errno a domain sees.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EINVAL
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// dupFD duplicates fd close-on-exec, for a message that will own it.
func dupFD(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// notify sends d a notification, taking ownership of fds.
// Preconditions: Hypervisor.mu held.
func (d *vdom) notify(m hypercall.Msg, fds ...int) {
	if err := d.out.push(m.Append(nil), fds); errors.Is(err, errOverflow) {
		d.log.Warn("hypervisor: domain disconnected: it does not read its agent connection")
		d.conn.Close()
	}
}
