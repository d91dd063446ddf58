#!/usr/bin/env bash
# bench-console.sh — shi bench console between two test hosts (network
# namespaces, one agent each; internal/clustertest TestBenchConsole):
# a domain on h0 printing flat out and echoing keystrokes, viewed with
# the console WebSocket through h1's agent, against the same program on
# a pty on h0 bridged over TCP to h1, measured in the same run; then the
# same with the console's back end on h1 (console_backend), so that the
# ring itself crosses hosts. Each run's last line is the headline:
#
#   console echo latency / tcp pty echo latency = X     (goal: at most 1.3)
#
#   scripts/bench-console.sh                  (root; about a minute)
#   ARGS="-runs 9 -mib 128" scripts/bench-console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "bench-console: test hosts need root" >&2; exit 1; }
SHI_BENCH_CONSOLE=1 SHI_BENCH_ARGS="${ARGS:-}" go test -count=1 -timeout 20m -run '^TestBenchConsole$' -v ./internal/clustertest/ |
	grep -v '^=== \|^--- \|^PASS$\|^ok '
