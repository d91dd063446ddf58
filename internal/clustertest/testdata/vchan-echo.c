// vchan-echo.c is a program of Debian's unmodified libxenvchan, for the
// replacement libraries' tests with rings in separate pages (which
// vchan-socket-proxy never asks for):
//
//   vchan-echo server PEER PATH READ_MIN WRITE_MIN   echo until the client leaves
//   vchan-echo client SERVER PATH BYTES              send BYTES, check the echo
//
// It exits 0 when all went well, else prints why and exits 1.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// libxenvchan.h (Xen 4.17), which Debian ships only in libxen-dev.
struct libxenvchan;
struct libxenvchan *libxenvchan_server_init(void *logger, int domain, const char *xs_path,
					    size_t read_min, size_t write_min);
struct libxenvchan *libxenvchan_client_init(void *logger, int domain, const char *xs_path);
void libxenvchan_close(struct libxenvchan *ctrl);
int libxenvchan_read(struct libxenvchan *ctrl, void *data, size_t size);
int libxenvchan_write(struct libxenvchan *ctrl, const void *data, size_t size);
int libxenvchan_wait(struct libxenvchan *ctrl);
int libxenvchan_is_open(struct libxenvchan *ctrl);

static uint8_t pattern(size_t i) { return (uint8_t)(i * 131 + (i >> 12)); }

static int server(int peer, const char *path, size_t rmin, size_t wmin) {
	struct libxenvchan *c = libxenvchan_server_init(NULL, peer, path, rmin, wmin);
	if (c == NULL) {
		perror("libxenvchan_server_init");
		return 1;
	}
	while (libxenvchan_is_open(c) == 2)
		libxenvchan_wait(c);
	static uint8_t buf[1 << 16];
	size_t have = 0, off = 0, echoed = 0;
	for (;;) {
		int progress = 0;
		if (have == 0) {
			int n = libxenvchan_read(c, buf, sizeof buf);
			if (n < 0)
				break; // the client has gone
			have = (size_t)n, off = 0, progress |= n > 0;
		}
		if (have > 0) {
			int n = libxenvchan_write(c, buf + off, have);
			if (n < 0)
				break;
			have -= (size_t)n, off += (size_t)n, echoed += (size_t)n, progress |= n > 0;
		}
		if (!progress) {
			if (!libxenvchan_is_open(c))
				break;
			libxenvchan_wait(c);
		}
	}
	printf("echoed %zu bytes\n", echoed);
	libxenvchan_close(c);
	return 0;
}

static int client(int srv, const char *path, size_t total) {
	struct libxenvchan *c = NULL;
	for (int i = 0; i < 600 && c == NULL; i++) { // the server may not be there yet
		c = libxenvchan_client_init(NULL, srv, path);
		if (c == NULL)
			usleep(50 * 1000);
	}
	if (c == NULL) {
		perror("libxenvchan_client_init");
		return 1;
	}
	static uint8_t out[1 << 15], in[1 << 15];
	size_t sent = 0, got = 0;
	while (got < total) {
		int progress = 0;
		if (sent < total) {
			size_t n = total - sent < sizeof out ? total - sent : sizeof out;
			for (size_t i = 0; i < n; i++)
				out[i] = pattern(sent + i);
			int w = libxenvchan_write(c, out, n);
			if (w < 0) {
				fprintf(stderr, "write failed after %zu bytes\n", sent);
				return 1;
			}
			sent += (size_t)w, progress |= w > 0;
		}
		int r = libxenvchan_read(c, in, sizeof in);
		if (r < 0) {
			fprintf(stderr, "read failed after %zu bytes\n", got);
			return 1;
		}
		for (int i = 0; i < r; i++) {
			if (in[i] != pattern(got + (size_t)i)) {
				fprintf(stderr, "byte %zu differs\n", got + (size_t)i);
				return 1;
			}
		}
		got += (size_t)r, progress |= r > 0;
		if (!progress)
			libxenvchan_wait(c);
	}
	printf("%zu bytes echoed intact\n", got);
	libxenvchan_close(c);
	return 0;
}

int main(int argc, char **argv) {
	alarm(100);
	if (argc == 6 && strcmp(argv[1], "server") == 0)
		return server(atoi(argv[2]), argv[3], strtoul(argv[4], NULL, 0), strtoul(argv[5], NULL, 0));
	if (argc == 5 && strcmp(argv[1], "client") == 0)
		return client(atoi(argv[2]), argv[3], strtoul(argv[4], NULL, 0));
	fprintf(stderr, "usage: vchan-echo server PEER PATH READ_MIN WRITE_MIN | client SERVER PATH BYTES\n");
	return 2;
}
