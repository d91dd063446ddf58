// abi.c exercises the replacement libraries through Xen's C API, as a
// shi domain, alone: a loopback event channel pair and grants to itself.
// It prints what fails and exits 1, or prints "ok".
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

// Prototypes of xenevtchn.h, xengnttab.h and xenctrl.h (Xen 4.17).
typedef struct xenevtchn_handle xenevtchn_handle;
typedef struct xengnttab_handle xengnttab_handle;
typedef struct xengntshr_handle xengntshr_handle;
typedef struct xc_interface_core xc_interface;
xenevtchn_handle *xenevtchn_open(void *logger, unsigned flags);
xenevtchn_handle *xenevtchn_fdopen(void *logger, int fd, unsigned flags);
int xenevtchn_close(xenevtchn_handle *h);
int xenevtchn_fd(xenevtchn_handle *h);
int xenevtchn_notify(xenevtchn_handle *h, uint32_t port);
int xenevtchn_bind_unbound_port(xenevtchn_handle *h, uint32_t domid);
int xenevtchn_bind_interdomain(xenevtchn_handle *h, uint32_t domid, uint32_t port);
int xenevtchn_bind_virq(xenevtchn_handle *h, unsigned virq);
int xenevtchn_unbind(xenevtchn_handle *h, uint32_t port);
int xenevtchn_pending(xenevtchn_handle *h);
int xenevtchn_unmask(xenevtchn_handle *h, uint32_t port);
int xenevtchn_restrict(xenevtchn_handle *h, uint16_t domid);
xengnttab_handle *xengnttab_open(void *logger, unsigned flags);
int xengnttab_close(xengnttab_handle *h);
void *xengnttab_map_grant_refs(xengnttab_handle *h, uint32_t count, uint32_t *domids, uint32_t *refs, int prot);
void *xengnttab_map_domain_grant_refs(xengnttab_handle *h, uint32_t count, uint32_t domid, uint32_t *refs, int prot);
void *xengnttab_map_grant_ref_notify(xengnttab_handle *h, uint32_t domid, uint32_t ref, int prot, uint32_t off, uint32_t port);
int xengnttab_unmap(xengnttab_handle *h, void *start, uint32_t count);
int xengnttab_set_max_grants(xengnttab_handle *h, uint32_t n);
struct seg {
	union { void *virt; struct { uint32_t ref; uint16_t offset; uint16_t domid; } foreign; } source, dest;
	uint16_t len, flags;
	int16_t status;
};
int xengnttab_grant_copy(xengnttab_handle *h, uint32_t count, struct seg *segs);
xengntshr_handle *xengntshr_open(void *logger, unsigned flags);
int xengntshr_close(xengntshr_handle *h);
void *xengntshr_share_pages(xengntshr_handle *h, uint32_t domid, int count, uint32_t *refs, int writable);
void *xengntshr_share_page_notify(xengntshr_handle *h, uint32_t domid, uint32_t *ref, int writable, uint32_t off, uint32_t port);
int xengntshr_unshare(xengntshr_handle *h, void *start, uint32_t count);
xc_interface *xc_interface_open(void *logger, void *dlogger, unsigned flags);
int xc_interface_close(xc_interface *xch);
int xc_domain_getinfo(xc_interface *xch, uint32_t first, unsigned max, void *info);

static int failures;
#define CHECK(cond, ...)                                                                   \
	do {                                                                                \
		if (!(cond)) {                                                              \
			int e_ = errno;                                                     \
			fprintf(stderr, "FAIL line %d: ", __LINE__);                        \
			fprintf(stderr, __VA_ARGS__);                                       \
			fprintf(stderr, " (errno %d: %s)\n", e_, strerror(e_));             \
			failures++;                                                         \
		}                                                                           \
	} while (0)

static int readable(int fd, int ms) {
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct kick {
	xenevtchn_handle *h;
	int port;
};

static void *late_notify(void *arg) {
	struct kick *k = arg;
	usleep(100 * 1000);
	xenevtchn_notify(k->h, k->port);
	return NULL;
}

// take expects port p to be delivered by poll + pending, and re-arms it.
static void take(xenevtchn_handle *e, int p, const char *what) {
	CHECK(readable(xenevtchn_fd(e), 2000), "%s: the fd is not readable", what);
	int got = xenevtchn_pending(e);
	CHECK(got == p, "%s: pending gave %d, want %d", what, got, p);
	CHECK(xenevtchn_unmask(e, p) == 0, "%s: unmask", what);
}

static void evtchn_tests(uint32_t self) {
	xenevtchn_handle *e = xenevtchn_open(NULL, 0);
	CHECK(e != NULL, "xenevtchn_open");
	if (e == NULL)
		exit(1);
	CHECK(xenevtchn_open(NULL, 0x100) == NULL && errno == EINVAL, "an unknown open flag is refused");
	int fd = xenevtchn_fd(e);
	int a = xenevtchn_bind_unbound_port(e, self);
	int b = xenevtchn_bind_interdomain(e, self, a);
	CHECK(a > 0 && b > 0 && a != b, "a loopback pair: %d %d", a, b);
	take(e, b, "the bind's own event");
	CHECK(!readable(fd, 50), "the fd is readable with nothing pending");

	for (int i = 0; i < 5; i++)
		CHECK(xenevtchn_notify(e, a) == 0, "notify");
	take(e, b, "five sends");
	CHECK(!readable(fd, 50), "five sends gave more than one event");
	CHECK(xenevtchn_notify(e, b) == 0, "notify back");
	take(e, a, "a send the other way");

	// pending blocks, as a read of the device does.
	struct kick k = {e, a};
	pthread_t th;
	double t0 = now();
	pthread_create(&th, NULL, late_notify, &k);
	int got = xenevtchn_pending(e);
	double waited = now() - t0;
	pthread_join(th, NULL);
	CHECK(got == b && waited >= 0.09, "a blocking pending gave %d after %.3f s, want %d after 0.1 s", got, waited, b);
	xenevtchn_unmask(e, b);

	CHECK(xenevtchn_unbind(e, b) == 0, "unbind");
	CHECK(xenevtchn_unbind(e, b) == -1 && errno == EINVAL, "unbind twice");
	CHECK(xenevtchn_notify(e, a) == 0, "a send on a port whose peer left is dropped, not refused");
	CHECK(xenevtchn_notify(e, 4000) == -1, "a send on a port not bound");
	CHECK(xenevtchn_bind_interdomain(e, 30000, 1) == -1 && errno == ESRCH, "a bind to a domain that does not exist");

	xenevtchn_handle *r = xenevtchn_open(NULL, 0);
	uint16_t other = self == 1 ? 2 : 1;
	CHECK(xenevtchn_restrict(r, other) == 0, "restrict");
	CHECK(xenevtchn_bind_unbound_port(r, self) == -1 && errno == EACCES, "a restricted handle binds for another domain");
	CHECK(xenevtchn_restrict(r, other) == -1 && errno == EACCES, "restrict twice");
	CHECK(xenevtchn_close(r) == 0, "close");

	CHECK(xenevtchn_bind_virq(e, 0) == -1 && errno == ENOSYS, "bind_virq");
	CHECK(xenevtchn_fdopen(NULL, 0, 0) == NULL && errno == ENOSYS, "fdopen");
	CHECK(xenevtchn_close(e) == 0, "close");
	CHECK(xenevtchn_close(NULL) == 0, "close(NULL)");
}

static void gnttab_tests(uint32_t self) {
	xengntshr_handle *gs = xengntshr_open(NULL, 0);
	xengnttab_handle *gt = xengnttab_open(NULL, 0);
	CHECK(gs && gt, "open");
	if (!gs || !gt)
		exit(1);
	uint32_t refs[2];
	uint8_t *sp = xengntshr_share_pages(gs, self, 2, refs, 1);
	CHECK(sp != NULL && ((uintptr_t)sp & 4095) == 0, "share_pages: %p", (void *)sp);
	if (sp == NULL)
		exit(1);
	int zero = 1;
	for (int i = 0; i < 8192; i++)
		zero &= sp[i] == 0;
	CHECK(zero, "shared pages start zeroed");
	for (int i = 0; i < 8192; i++)
		sp[i] = (uint8_t)(i * 7 + 3);

	uint8_t *mp = xengnttab_map_domain_grant_refs(gt, 2, self, refs, PROT_READ | PROT_WRITE);
	CHECK(mp != NULL, "map_domain_grant_refs");
	if (mp != NULL) {
		CHECK(memcmp(mp, sp, 8192) == 0, "the mapping shows the granted pages, in order");
		mp[5000] = 0xAB;
		CHECK(sp[5000] == 0xAB, "a write through the mapping is the granter's page");
		CHECK(xengnttab_unmap(gt, mp, 1) == -1 && errno == EINVAL, "unmap of part of a mapping");
		CHECK(xengnttab_unmap(gt, mp, 2) == 0, "unmap");
		CHECK(xengnttab_unmap(gt, mp, 2) == -1 && errno == EINVAL, "unmap twice");
	}
	uint32_t doms[2] = {self, self + 1};
	CHECK(xengnttab_map_grant_refs(gt, 2, doms, refs, PROT_READ) == NULL && errno == EINVAL, "map_grant_refs of two granters");
	CHECK(xengnttab_map_domain_grant_refs(gt, 1, self, (uint32_t[]){4000}, PROT_READ) == NULL, "map of a ref that grants nothing");

	// grant_copy, both directions, and a segment past the page.
	uint8_t buf[256];
	struct seg s[2];
	memset(s, 0, sizeof s);
	s[0].source.foreign.ref = refs[0];
	s[0].source.foreign.offset = 100;
	s[0].source.foreign.domid = self;
	s[0].dest.virt = buf;
	s[0].len = 50;
	s[0].flags = 1; // GNTCOPY_source_gref
	memset(buf + 60, 0x5A, 96);
	s[1].source.virt = buf + 60;
	s[1].dest.foreign.ref = refs[1];
	s[1].dest.foreign.offset = 4000;
	s[1].dest.foreign.domid = self;
	s[1].len = 96;
	s[1].flags = 2; // GNTCOPY_dest_gref
	CHECK(xengnttab_grant_copy(gt, 2, s) == 0, "grant_copy");
	CHECK(s[0].status == 0 && s[1].status == 0, "grant_copy statuses %d %d", s[0].status, s[1].status);
	CHECK(memcmp(buf, sp + 100, 50) == 0, "copied from the grant");
	int copied = 1;
	for (int i = 0; i < 96; i++)
		copied &= sp[4096 + 4000 + i] == 0x5A;
	CHECK(copied, "copied into the grant");
	s[0].source.foreign.offset = 4090;
	s[0].len = 10;
	CHECK(xengnttab_grant_copy(gt, 1, s) == -1 && errno == EINVAL, "a copy past the granted page");
	s[0].source.foreign.ref = 4000;
	s[0].source.foreign.offset = 0;
	CHECK(xengnttab_grant_copy(gt, 1, s) == 0 && s[0].status != 0, "a copy from a ref that grants nothing: status %d", s[0].status);

	xengnttab_handle *lim = xengnttab_open(NULL, 0);
	CHECK(xengnttab_set_max_grants(lim, 1) == 0, "set_max_grants");
	CHECK(xengnttab_map_domain_grant_refs(lim, 2, self, refs, PROT_READ) == NULL, "more grants than set_max_grants");
	void *one = xengnttab_map_domain_grant_refs(lim, 1, self, refs, PROT_READ);
	CHECK(one != NULL, "one grant within set_max_grants");
	xengnttab_unmap(lim, one, 1);
	xengnttab_close(lim);

	// Unmap notifications: the mapper's (byte cleared, its port sent on)
	// and the granter's on unshare.
	xenevtchn_handle *e = xenevtchn_open(NULL, 0);
	int a = xenevtchn_bind_unbound_port(e, self);
	int b = xenevtchn_bind_interdomain(e, self, a);
	take(e, b, "the bind's own event");
	sp[7] = 1;
	uint8_t *np = xengnttab_map_grant_ref_notify(gt, self, refs[0], PROT_READ | PROT_WRITE, 7, b);
	CHECK(np != NULL && np[7] == 1, "map_grant_ref_notify");
	CHECK(xengnttab_unmap(gt, np, 1) == 0, "unmap with a notification");
	CHECK(sp[7] == 0, "the unmap cleared the notification byte");
	take(e, a, "the unmap's event");
	CHECK(xengnttab_map_grant_ref_notify(gt, self, refs[0], PROT_READ, 7, b) == NULL && errno == EINVAL,
	      "a notification byte in a read-only mapping");

	uint32_t ref;
	uint8_t *pp = xengntshr_share_page_notify(gs, self, &ref, 1, 9, a);
	CHECK(pp != NULL, "share_page_notify");
	if (pp != NULL) {
		pp[9] = 1;
		uint8_t *peer = xengnttab_map_domain_grant_refs(gt, 1, self, &ref, PROT_READ | PROT_WRITE);
		CHECK(peer != NULL && peer[9] == 1, "map of the notifying page");
		CHECK(xengntshr_unshare(gs, pp, 1) == 0, "unshare while mapped (the grant ends once unmapped)");
		CHECK(peer == NULL || peer[9] == 0, "the unshare cleared the notification byte");
		take(e, b, "the unshare's event");
		if (peer != NULL)
			CHECK(xengnttab_unmap(gt, peer, 1) == 0, "unmap after the unshare");
	}
	// munmap of grant memory ends it, as with gntdev and gntalloc
	// (libxenvchan unmaps its paged rings so).
	sp[7] = 1;
	np = xengnttab_map_grant_ref_notify(gt, self, refs[0], PROT_READ | PROT_WRITE, 7, b);
	CHECK(np != NULL, "map_grant_ref_notify");
	if (np != NULL) {
		CHECK(munmap(np, 4096) == 0, "munmap of a mapping");
		CHECK(sp[7] == 0, "munmap of a mapping cleared the notification byte");
		take(e, a, "munmap of a mapping: its event");
		CHECK(xengnttab_unmap(gt, np, 1) == -1 && errno == EINVAL, "unmap after munmap");
	}
	mp = xengnttab_map_domain_grant_refs(gt, 2, self, refs, PROT_READ);
	CHECK(mp != NULL, "map_domain_grant_refs");
	if (mp != NULL) {
		CHECK(munmap(mp + 4096, 4096) == -1 && errno == EINVAL, "munmap of half a mapping");
		CHECK(munmap(mp, 8192) == 0, "munmap of a two-page mapping");
	}
	pp = xengntshr_share_page_notify(gs, self, &ref, 1, 9, a);
	CHECK(pp != NULL, "share_page_notify");
	if (pp != NULL) {
		pp[9] = 1;
		uint8_t *peer = xengnttab_map_domain_grant_refs(gt, 1, self, &ref, PROT_READ | PROT_WRITE);
		CHECK(peer != NULL && peer[9] == 1, "map of the notifying page");
		CHECK(munmap(pp, 4096) == 0, "munmap of a share");
		CHECK(peer == NULL || peer[9] == 0, "munmap of a share cleared the notification byte");
		take(e, b, "munmap of a share: its event");
		CHECK(xengntshr_unshare(gs, pp, 1) == -1 && errno == EINVAL, "unshare after munmap");
		if (peer != NULL)
			CHECK(munmap(peer, 4096) == 0, "munmap of the mapping of a withdrawn share");
	}
	void *plain = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(plain != MAP_FAILED && munmap(plain, 4096) == 0, "munmap of ordinary memory");

	CHECK(xengntshr_unshare(gs, sp, 1) == -1 && errno == EINVAL, "unshare of part of a share");
	CHECK(xengntshr_unshare(gs, sp, 2) == 0, "unshare");
	CHECK(xengntshr_unshare(gs, sp, 2) == -1 && errno == EINVAL, "unshare twice");
	xenevtchn_close(e);
	CHECK(xengnttab_close(gt) == 0 && xengntshr_close(gs) == 0, "close");
}

static void xc_tests(uint32_t self) {
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	CHECK(xch != NULL, "xc_interface_open");
	if (xch == NULL)
		return;
	uint8_t info[2][112]; // xc_dominfo_t
	memset(info, 0xFF, sizeof info);
	int n = xc_domain_getinfo(xch, self, 1, info);
	uint32_t domid;
	memcpy(&domid, info[0], 4);
	CHECK(n == 1 && domid == self, "getinfo of itself: %d, domid %u", n, domid);
	CHECK((info[0][8] & 1) == 0, "itself dying");
	CHECK(info[1][0] == 0xFF, "getinfo wrote past max_doms");
	errno = 0;
	n = xc_domain_getinfo(xch, 30000, 1, info);
	CHECK(n == -1 && errno == ESRCH, "getinfo of no domain: %d", n);
	CHECK(xc_interface_close(xch) == 0, "xc_interface_close");
}

int main(void) {
	const char *s = getenv("SHI_DOMID");
	if (s == NULL) {
		fprintf(stderr, "not a shi domain\n");
		return 2;
	}
	uint32_t self = (uint32_t)atoi(s);
	alarm(40); // a call that hangs fails the test, rather than its timeout
	evtchn_tests(self);
	gnttab_tests(self);
	xc_tests(self);
	if (failures) {
		fprintf(stderr, "%d failures\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
