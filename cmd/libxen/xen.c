// The C faces of the library: Xen's exact prototypes (tools/include/
// xenevtchn.h, xengnttab.h and xenctrl.h of Xen 4.17), which turn the Go
// side's negative errno returns into -1 or NULL with errno set, as the
// real libraries do. A Go function cannot set the calling thread's errno
// reliably, so it is set here, after Go has returned.

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_cgo_export.h"

struct xentoollog_logger;
typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;

// Handles are small C structs naming an entry of a Go table: cgo does not
// let C keep Go pointers.
typedef struct xenevtchn_handle { int id; } xenevtchn_handle;
typedef struct xengnttab_handle { int id; } xengnttab_handle;
typedef struct xengntshr_handle { int id; } xengntshr_handle;
typedef struct xc_interface_core { int id; } xc_interface;

// xengnttab_grant_copy_segment_t (xengnttab.h), 24 bytes.
typedef struct xengnttab_grant_copy_segment {
	union {
		void *virt;
		struct {
			uint32_t ref;
			uint16_t offset;
			uint16_t domid;
		} foreign;
	} source, dest;
	uint16_t len;
	uint16_t flags;
	int16_t status;
} xengnttab_grant_copy_segment_t;
_Static_assert(sizeof(xengnttab_grant_copy_segment_t) == 24, "grant copy segment layout");

// xc_dominfo_t of Xen 4.17's xenctrl.h on x86_64 (112 bytes), with its
// arch_config (struct xen_arch_domainconfig: emulation_flags, misc_flags).
typedef struct xc_dominfo {
	uint32_t domid;
	uint32_t ssidref;
	unsigned int dying:1, crashed:1, shutdown:1,
		paused:1, blocked:1, running:1,
		hvm:1, debugged:1, xenstore:1, hap:1;
	unsigned int shutdown_reason;
	unsigned long nr_pages;
	unsigned long nr_outstanding_pages;
	unsigned long nr_shared_pages;
	unsigned long nr_paged_pages;
	unsigned long shared_info_frame;
	uint64_t cpu_time;
	unsigned long max_memkb;
	unsigned int nr_online_vcpus;
	unsigned int max_vcpu_id;
	uint8_t handle[16];
	unsigned int cpupool;
	uint8_t gpaddr_bits;
	struct {
		uint32_t emulation_flags;
		uint32_t misc_flags;
	} arch_config;
} xc_dominfo_t;
_Static_assert(sizeof(xc_dominfo_t) == 112, "xc_dominfo_t size (Xen 4.17, x86_64)");
_Static_assert(offsetof(xc_dominfo_t, shutdown_reason) == 12, "xc_dominfo_t layout");
_Static_assert(offsetof(xc_dominfo_t, cpu_time) == 56, "xc_dominfo_t layout");
_Static_assert(offsetof(xc_dominfo_t, nr_online_vcpus) == 72, "xc_dominfo_t layout");
_Static_assert(offsetof(xc_dominfo_t, handle) == 80, "xc_dominfo_t layout");
_Static_assert(offsetof(xc_dominfo_t, arch_config) == 104, "xc_dominfo_t layout");

static int fail(int r) {
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return r;
}

static void *ptr(int r, uintptr_t p) {
	if (r < 0) {
		errno = -r;
		return NULL;
	}
	return (void *)p;
}

// newHandle wraps a table id, or fails with the id's errno.
static void *newHandle(int id, void (*undo)(int)) {
	if (id < 0) {
		errno = -id;
		return NULL;
	}
	int *h = malloc(sizeof *h);
	if (h == NULL) {
		undo(id);
		errno = ENOMEM;
		return NULL;
	}
	*h = id;
	return h;
}

// Event channels (libxenevtchn).

static void evtchnUndo(int id) { shiEvtchnClose(id); }

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags) {
	(void)logger;
	return newHandle(shiEvtchnOpen(flags), evtchnUndo);
}

xenevtchn_handle *xenevtchn_fdopen(struct xentoollog_logger *logger, int fd, unsigned int flags) {
	(void)logger;
	(void)fd;
	(void)flags;
	// A descriptor inherited from another process names nothing here:
	// shi's event channels belong to the domain's agent connection.
	errno = ENOSYS;
	return NULL;
}

int xenevtchn_close(xenevtchn_handle *xce) {
	if (xce == NULL)
		return 0;
	int r = shiEvtchnClose(xce->id);
	free(xce);
	return fail(r);
}

int xenevtchn_fd(xenevtchn_handle *xce) { return fail(shiEvtchnFd(xce->id)); }

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port) {
	return fail(shiEvtchnNotify(xce->id, port));
}

int xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid) {
	return fail(shiEvtchnBindUnbound(xce->id, domid));
}

int xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid, evtchn_port_t remote_port) {
	return fail(shiEvtchnBindInterdomain(xce->id, domid, remote_port));
}

int xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq) {
	(void)xce;
	(void)virq;
	errno = ENOSYS; // shi raises no virtual IRQs
	return -1;
}

int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port) {
	return fail(shiEvtchnUnbind(xce->id, port));
}

int xenevtchn_pending(xenevtchn_handle *xce) { return fail(shiEvtchnPending(xce->id)); }

int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port) {
	return fail(shiEvtchnUnmask(xce->id, port));
}

int xenevtchn_restrict(xenevtchn_handle *xce, domid_t domid) {
	return fail(shiEvtchnRestrict(xce->id, domid));
}

// Grant mappings (libxengnttab).

static void gnttabUndo(int id) { shiGnttabClose(id); }

xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger, unsigned int flags) {
	(void)logger;
	return newHandle(shiGnttabOpen(flags), gnttabUndo);
}

int xengnttab_close(xengnttab_handle *xgt) {
	if (xgt == NULL)
		return 0;
	int r = shiGnttabClose(xgt->id);
	free(xgt);
	return fail(r);
}

int xengnttab_fd(xengnttab_handle *xgt) { return fail(shiGnttabFd(xgt->id)); }

void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot) {
	uintptr_t p = 0;
	int r = shiGnttabMap(xgt->id, 1, &domid, 0, &ref, prot, UINT32_MAX, UINT32_MAX, &p);
	return ptr(r, p);
}

void *xengnttab_map_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t *domids,
			       uint32_t *refs, int prot) {
	uintptr_t p = 0;
	int r = shiGnttabMap(xgt->id, count, domids, 1, refs, prot, UINT32_MAX, UINT32_MAX, &p);
	return ptr(r, p);
}

void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t domid,
				      uint32_t *refs, int prot) {
	uintptr_t p = 0;
	int r = shiGnttabMap(xgt->id, count, &domid, 0, refs, prot, UINT32_MAX, UINT32_MAX, &p);
	return ptr(r, p);
}

void *xengnttab_map_grant_ref_notify(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot,
				     uint32_t notify_offset, evtchn_port_t notify_port) {
	uintptr_t p = 0;
	int r = shiGnttabMap(xgt->id, 1, &domid, 0, &ref, prot, notify_offset, notify_port, &p);
	return ptr(r, p);
}

int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count) {
	return fail(shiGnttabUnmap(xgt->id, start_address, count));
}

int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants) {
	return fail(shiGnttabSetMaxGrants(xgt->id, nr_grants));
}

int xengnttab_grant_copy(xengnttab_handle *xgt, uint32_t count, xengnttab_grant_copy_segment_t *segs) {
	for (uint32_t i = 0; i < count; i++) {
		xengnttab_grant_copy_segment_t *s = &segs[i];
		// GNTCOPY_source_gref 1: from a grant into virt; GNTCOPY_dest_gref 2:
		// from virt into a grant.
		void *src = (s->flags & 1) ? NULL : s->source.virt;
		void *dst = (s->flags & 2) ? NULL : s->dest.virt;
		int r = shiGnttabCopy(xgt->id, s->flags, s->len,
				      s->source.foreign.ref, s->source.foreign.offset, s->source.foreign.domid, src,
				      s->dest.foreign.ref, s->dest.foreign.offset, s->dest.foreign.domid, dst,
				      &s->status);
		if (r < 0)
			return fail(r);
	}
	return 0;
}

int xengnttab_dmabuf_exp_from_refs(xengnttab_handle *xgt, uint32_t domid, uint32_t flags,
				   uint32_t count, const uint32_t *refs, uint32_t *fd) {
	(void)xgt, (void)domid, (void)flags, (void)count, (void)refs, (void)fd;
	errno = ENOSYS; // no DMA buffers without devices
	return -1;
}

int xengnttab_dmabuf_exp_wait_released(xengnttab_handle *xgt, uint32_t fd, uint32_t wait_to_ms) {
	(void)xgt, (void)fd, (void)wait_to_ms;
	errno = ENOSYS;
	return -1;
}

int xengnttab_dmabuf_imp_to_refs(xengnttab_handle *xgt, uint32_t domid, uint32_t fd, uint32_t count,
				 uint32_t *refs) {
	(void)xgt, (void)domid, (void)fd, (void)count, (void)refs;
	errno = ENOSYS;
	return -1;
}

int xengnttab_dmabuf_imp_release(xengnttab_handle *xgt, uint32_t fd) {
	(void)xgt, (void)fd;
	errno = ENOSYS;
	return -1;
}

// Shared pages (libxengntshr).

static void gntshrUndo(int id) { shiGntshrClose(id); }

xengntshr_handle *xengntshr_open(struct xentoollog_logger *logger, unsigned int flags) {
	(void)logger;
	return newHandle(shiGntshrOpen(flags), gntshrUndo);
}

int xengntshr_close(xengntshr_handle *xgs) {
	if (xgs == NULL)
		return 0;
	int r = shiGntshrClose(xgs->id);
	free(xgs);
	return fail(r);
}

int xengntshr_fd(xengntshr_handle *xgs) { return fail(shiGntshrFd(xgs->id)); }

void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count, uint32_t *refs,
			    int writable) {
	uintptr_t p = 0;
	int r = shiGntshrShare(xgs->id, domid, count, refs, writable, UINT32_MAX, UINT32_MAX, &p);
	return ptr(r, p);
}

void *xengntshr_share_page_notify(xengntshr_handle *xgs, uint32_t domid, uint32_t *ref, int writable,
				  uint32_t notify_offset, evtchn_port_t notify_port) {
	uintptr_t p = 0;
	int r = shiGntshrShare(xgs->id, domid, 1, ref, writable, notify_offset, notify_port, &p);
	return ptr(r, p);
}

int xengntshr_unshare(xengntshr_handle *xgs, void *start_address, uint32_t count) {
	return fail(shiGntshrUnshare(xgs->id, start_address, count));
}

// The libxenctrl functions vchan-socket-proxy calls (client mode), which
// need a real hypervisor in libxenctrl itself.

static void xcUndo(int id) { shiXcClose(id); }

xc_interface *xc_interface_open(struct xentoollog_logger *logger, struct xentoollog_logger *dombuild_logger,
				unsigned int open_flags) {
	(void)logger, (void)dombuild_logger;
	return newHandle(shiXcOpen(open_flags), xcUndo);
}

int xc_interface_close(xc_interface *xch) {
	if (xch == NULL)
		return 0;
	int r = shiXcClose(xch->id);
	free(xch);
	return fail(r);
}

int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms, xc_dominfo_t *info) {
	if (xch == NULL) {
		errno = EINVAL;
		return -1;
	}
	int n = 0;
	uint32_t next = first_domid;
	while ((unsigned int)n < max_doms) {
		uint32_t domid = 0;
		int r = shiXcNextDomain(xch->id, next, &domid);
		if (r < 0) {
			if (n == 0)
				return fail(r); // ESRCH: no domain from first_domid on
			break;
		}
		// What shi knows of a domain of any host: it exists and is not
		// dying (a dead one is gone at once). The rest stays zero.
		memset(&info[n], 0, sizeof info[n]);
		info[n].domid = domid;
		info[n].running = 1;
		info[n].nr_online_vcpus = 1;
		n++;
		next = domid + 1;
	}
	return n;
}

// munmap of grant memory. libxenvchan unmaps its paged rings with munmap,
// not through the grant API: with Linux's gntdev and gntalloc that ends
// the grant mappings and shares. Here the library must hear of it, or
// the mapping would stay at the agent and, across hosts, the library
// would go on reading memory that is gone. So the library (preloaded)
// defines munmap: a range holding whole mappings or shares of the library
// goes to it; everything else, the Go runtime's own unmaps included,
// is the system call. The check is C alone (no Go), under a mutex that
// nothing holds while it calls out.

struct region {
	uintptr_t start;
	size_t len;
};

static pthread_mutex_t regionsMu = PTHREAD_MUTEX_INITIALIZER;
static struct region *regions; // guarded by regionsMu
static size_t nregions, capregions;

void shiRangeAdd(uintptr_t start, size_t len) {
	pthread_mutex_lock(&regionsMu);
	if (nregions == capregions) {
		size_t c = capregions ? 2 * capregions : 64;
		struct region *r = realloc(regions, c * sizeof *r);
		if (r == NULL) { // not tracked: a munmap of it is then only the system call
			pthread_mutex_unlock(&regionsMu);
			return;
		}
		regions = r;
		capregions = c;
	}
	regions[nregions++] = (struct region){start, len};
	pthread_mutex_unlock(&regionsMu);
}

void shiRangeDel(uintptr_t start) {
	pthread_mutex_lock(&regionsMu);
	for (size_t i = 0; i < nregions; i++) {
		if (regions[i].start == start) {
			regions[i] = regions[--nregions];
			break;
		}
	}
	pthread_mutex_unlock(&regionsMu);
}

int munmap(void *addr, size_t len) {
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	int whole = 0, partial = 0;
	pthread_mutex_lock(&regionsMu);
	for (size_t i = 0; i < nregions; i++) {
		uintptr_t s = regions[i].start, e = s + regions[i].len;
		if (e <= lo || s >= hi)
			continue;
		if (s >= lo && e <= hi)
			whole++;
		else
			partial++;
	}
	pthread_mutex_unlock(&regionsMu);
	if (partial) {
		// Part of a grant mapping: the library cannot end half of one.
		errno = EINVAL;
		return -1;
	}
	if (whole)
		return fail(shiMunmapRegions(lo, len));
	return fail((int)syscall(SYS_munmap, addr, len));
}
