package shm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Epoll is an epoll instance: the guest library's one pollable "event
// channel fd" over all of its ports' eventfds. Masking a port is Modify
// to no events; unmasking re-arms EPOLLIN, and a port still pending is
// reported again, which is Xen's unmask re-check.
type Epoll struct {
	fd int
}

// NewEpoll creates a close-on-exec epoll instance.
func NewEpoll() (*Epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("shm: epoll_create1: %w", err)
	}
	return &Epoll{fd: fd}, nil
}

// Fd is the epoll descriptor: readable when some watched fd is ready.
func (e *Epoll) Fd() int { return e.fd }

// Add watches fd for events (e.g. unix.EPOLLIN), reporting token.
func (e *Epoll) Add(fd int, events uint32, token int32) error {
	ev := unix.EpollEvent{Events: events, Fd: token}
	return wrapEpoll("add", unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, fd, &ev))
}

// Modify changes the events watched on fd; 0 disarms it.
func (e *Epoll) Modify(fd int, events uint32, token int32) error {
	ev := unix.EpollEvent{Events: events, Fd: token}
	return wrapEpoll("mod", unix.EpollCtl(e.fd, unix.EPOLL_CTL_MOD, fd, &ev))
}

// Delete stops watching fd.
func (e *Epoll) Delete(fd int) error {
	return wrapEpoll("del", unix.EpollCtl(e.fd, unix.EPOLL_CTL_DEL, fd, nil))
}

// Wait fills events with ready fds (their tokens in Fd), waiting up to
// msec milliseconds (-1 forever, 0 not at all). EINTR is retried.
func (e *Epoll) Wait(events []unix.EpollEvent, msec int) (int, error) {
	for {
		n, err := unix.EpollWait(e.fd, events, msec)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, wrapEpoll("wait", err)
	}
}

// Close closes the epoll instance.
func (e *Epoll) Close() error { return unix.Close(e.fd) }

func wrapEpoll(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("shm: epoll %s: %w", op, err)
}
