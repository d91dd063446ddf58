#!/usr/bin/env bash
# build-libxen.sh builds shi's replacement libxenevtchn.so.1 and
# libxengnttab.so.1 (cmd/libxen) into DIR, for unmodified Xen programs run
# as shi domains (config `xen_libs = 1`, agent `-xen-libs DIR`):
#
#   DIR/libxenevtchn.so.1   the library (a Go c-shared object, soname
#                           libxenevtchn.so.1, Xen's symbol versions)
#   DIR/libxengnttab.so.1   a symlink to it: one file, one Go runtime per
#                           process
#
# Needs Go and a C compiler (cgo). Domains run under uids of their own, so
# DIR and every directory above it must let other users through (o+x);
# the files are made world-readable.
#
#   scripts/build-libxen.sh /opt/shi/xen
set -euo pipefail
if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$repo" && CGO_ENABLED=1 $GO build -buildmode=c-shared -trimpath \
	-ldflags "-extldflags '-Wl,--version-script=$repo/cmd/libxen/xen.map -Wl,-soname,libxenevtchn.so.1'" \
	-o "$tmp/libxenevtchn.so.1" ./cmd/libxen)
chmod 0755 "$tmp/libxenevtchn.so.1"
mv -f "$tmp/libxenevtchn.so.1" "$dir/libxenevtchn.so.1"
ln -sfn libxenevtchn.so.1 "$dir/libxengnttab.so.1"
