package shm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// EventFD is a non-blocking eventfd: the doorbell behind one event-channel
// port. Its counter is non-zero while the port is pending, so any number
// of signals before a Drain coalesce into one event.
type EventFD struct {
	fd int
}

// NewEventFD creates a non-blocking, close-on-exec eventfd.
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("shm: eventfd: %w", err)
	}
	return &EventFD{fd: fd}, nil
}

// EventFDFrom wraps an eventfd received from another process and takes
// ownership of it.
func EventFDFrom(fd int) *EventFD { return &EventFD{fd: fd} }

// Fd is the descriptor, owned by e.
func (e *EventFD) Fd() int { return e.fd }

var one = binary.NativeEndian.AppendUint64(nil, 1)

// Signal adds 1 to the counter: one write(2). A saturated counter
// (EAGAIN) is already pending, so that is not an error.
func (e *EventFD) Signal() error { return Signal(e.fd) }

// Signal writes 1 to the eventfd fd.
func Signal(fd int) error {
	_, err := unix.Write(fd, one)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return wrapSignal(err)
	}
	return nil
}

func wrapSignal(err error) error { return fmt.Errorf("shm: signal eventfd: %w", err) }

// Drain reads and resets the counter, returning how many signals it held
// (0 if none).
func (e *EventFD) Drain() (uint64, error) {
	var b [8]byte
	_, err := unix.Read(e.fd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("shm: drain eventfd: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// Close closes the descriptor.
func (e *EventFD) Close() error { return unix.Close(e.fd) }
