#!/usr/bin/env bash
# bench-cluster.sh runs the cluster benchmarks: a 3-host cluster on test
# hosts (network namespaces, so run it as root) against a one-host dev
# agent, in one run — shi bench xenstore through a follower and the leader,
# single-key write latency, failure detection of a killed host with
# memberlist's default timings, and all of it again with 5 ms added between
# hosts. It prints figures and ratios; the last line is the headline.
#
#   scripts/bench-cluster.sh            one run (about 2-3 minutes)
#   RUNS=3 scripts/bench-cluster.sh     three runs, one after the other
#   TLS=1 scripts/bench-cluster.sh      the cluster's agents with mutual TLS
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench-cluster: test hosts need root (network namespaces)" >&2
	exit 1
fi
runs=${RUNS:-1}
for i in $(seq "$runs"); do
	[ "$runs" -eq 1 ] || echo "== run $i of $runs"
	SHI_BENCH_CLUSTER=1 go test -count=1 -run '^TestBenchCluster$' -v -timeout 30m ./internal/clustertest |
		grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS$' -e '^ok '
done
