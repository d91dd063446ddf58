// Package blkif is what the three parties of a Xen virtual block device
// share (spec/xen-abi.md §6): the toolstack, which writes both XenStore
// directories of a disk (Keys); the front end in the domain
// (guest/blkfront); and the back end in a driver domain
// (internal/devices/blkback).
//
// It names the directories (FrontPath, BackendPath), the keys in them
// (Key*), the xenbus states (State) and turns device names into Xen's
// virtual-device numbers (DevID) and back (DevName). The state helpers
// (ReadState, WriteState, WaitState) are the one place where the
// handshake's XenStore reads, writes and waits are spelled.
//
// The byte layouts of the ring itself are in internal/abi (blkif.go).
package blkif
