#!/usr/bin/env bash
# bench-vchan-proxy.sh reports the throughput of Debian's unmodified
# vchan-socket-proxy, server and client as shi domains over shi's
# libxenevtchn/libxengnttab, on one test host and across two: MIB MiB
# (default 64) each way at once through the proxies' Unix sockets. There
# is no goal: the proxy asks for the smallest rings (1 and 2 KiB inside
# the control page) and waits in select(), so it is a correctness check
# (internal/clustertest TestXenLibs) with a figure. Needs root.
#
#   scripts/bench-vchan-proxy.sh [MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SHI_VCHAN_PROXY_MIB=${1:-64} $GO test -count=1 -timeout 30m -v \
	-run 'TestXenLibs/proxy_(one_host|two_hosts)$' ./internal/clustertest |
	grep -E 'MB/s|^(--- )?FAIL|^ok' | sed 's/^ *vchanproxy_test.go:[0-9]*: //'
