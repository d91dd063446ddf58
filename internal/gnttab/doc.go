// Package gnttab implements Xen's grant-table rules (spec/xen-abi.md §3)
// over grant-table pages held as plain []byte, for the agent that plays
// the hypervisor.
//
// A granting domain writes v1 entries (flags, domid, frame) into its own
// grant table, a memory page it shares with its agent. The agent looks at
// an entry only when someone maps or copies through it: Table.Map checks
// that the entry is GTF_permit_access for the mapper (and not readonly for
// a writable map), sets GTF_reading/GTF_writing with a compare-and-swap on
// the shared word, and counts pins per (granter, ref) so that the bits are
// cleared only by the last Unmap. Ending access is the granter's own CAS
// of flags to 0 (EndAccess), which fails while either bit is set: a mapped
// grant cannot be revoked.
//
// Frames (a domain's shareable pages, by frame number) are behind the
// Frames interface, so the agent backs them with memfd mappings and tests
// with slices. Copy moves bytes between frames after checking both sides.
//
// remote.go holds the cross-host half: pins that domains of other hosts
// hold on local grants, tracked per mapping host, and maps of other
// hosts' grants, which take a maptrack slot here. The pages themselves
// are kept coherent by the domains' libraries (guest/link).
//
// The package has no syscalls and no goroutines. A Table is not safe for
// concurrent use; entry words shared with domains are only touched with
// atomics (internal/ring's word helpers), because domains write them
// concurrently.
package gnttab
