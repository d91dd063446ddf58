#!/usr/bin/env bash
# deps.sh installs what the test suite needs on a fresh Debian 12, and does
# nothing when everything is already there. Run it as root; without root it
# says what is missing and fails.
#
#   Go modules            go mod download
#   Debian packages       xenstore-utils (xenstore-read, -write, ...), iproute2,
#                         nftables (packet loss on a test host's link),
#                         libxenmisc4.17 (libxenvchan and libxenctrl, which
#                         vchan-socket-proxy needs; it pulls in Debian's
#                         libxenevtchn1/libxengnttab1, not systemd), gcc
#                         (cgo, for scripts/build-libxen.sh), tmux (drives
#                         shi console in the console tests), libnbd-bin and
#                         qemu-utils (nbdinfo, nbdcopy, qemu-img, qemu-io:
#                         NBD conformance in internal/nbd), fio (its nbd
#                         engine: NBD conformance, shi bench disk), nbdkit
#                         (the disk benchmark's baseline), chromium
#                         (headless, the web console's browser tests)
#   Xen's test-xenstore   xen-utils-4.17 + libxenmisc4.17, fetched with
#   and vchan-socket-     apt-get download and unpacked with dpkg -x into
#   proxy                 .cache/xen (installing xen-utils-4.17 with apt would
#                         pull in systemd and udev)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "deps: $*" >&2; }

# Debian packages the tests run, with one file each package provides.
apt_pkgs=(xenstore-utils:/usr/bin/xenstore-read iproute2:/usr/sbin/ip nftables:/usr/sbin/nft
	libxenmisc4.17:/usr/lib/x86_64-linux-gnu/libxenvchan.so.4.17 gcc:/usr/bin/gcc tmux:/usr/bin/tmux
	libnbd-bin:/usr/bin/nbdinfo qemu-utils:/usr/bin/qemu-io fio:/usr/bin/fio nbdkit:/usr/bin/nbdkit
	chromium:/usr/bin/chromium)
# Packages unpacked (not installed) into .cache/xen, and the file that shows
# they are there.
xen_cache=.cache/xen
xen_pkgs=(xen-utils-4.17 libxenmisc4.17)
xen_marker=$xen_cache/usr/lib/xen-4.17/bin/test-xenstore

go mod download

missing=()
for p in "${apt_pkgs[@]}"; do
	[ -e "${p#*:}" ] || missing+=("${p%%:*}")
done
need_xen=0
[ -x "$xen_marker" ] || need_xen=1

if [ ${#missing[@]} -eq 0 ] && [ $need_xen -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	[ ${#missing[@]} -eq 0 ] || log "missing packages: ${missing[*]} (apt-get install -y --no-install-recommends ${missing[*]})"
	[ $need_xen -eq 0 ] || log "missing $xen_marker (run scripts/deps.sh as root to unpack ${xen_pkgs[*]})"
	log "run scripts/deps.sh as root"
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
	if [ $updated -eq 0 ]; then
		log "apt-get update"
		apt-get update -qq
		updated=1
	fi
}

if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	apt_update
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ $need_xen -eq 1 ]; then
	log "unpacking ${xen_pkgs[*]} into $xen_cache"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# apt-get download runs as the _apt user, which must be able to write here.
	chmod 777 "$tmp"
	if ! (cd "$tmp" && apt-get download -qq "${xen_pkgs[@]}" 2>/dev/null); then
		apt_update
		(cd "$tmp" && apt-get download -qq "${xen_pkgs[@]}")
	fi
	rm -rf "$xen_cache.new"
	mkdir -p "$xen_cache.new"
	for deb in "$tmp"/*.deb; do
		dpkg -x "$deb" "$xen_cache.new"
	done
	rm -rf "$xen_cache"
	mv "$xen_cache.new" "$xen_cache"
	[ -x "$xen_marker" ] || { log "$xen_marker not found after unpacking"; exit 1; }
fi
