#!/bin/bash
# testhosts.sh — test hosts by hand: N network namespaces joined by veth
# pairs to a bridge that lives in a "switch" namespace of its own, so the
# root namespace is never touched. The same layout internal/nstest builds
# for tests, with the prefix "shih-" instead of "shint-".
#
#   testhosts.sh up N          make exactly N hosts (adds or removes; idempotent)
#   testhosts.sh down          kill everything in them and remove them
#   testhosts.sh exec I CMD…   run CMD inside host I (e.g. shi agent -bind $(testhosts.sh ip I))
#   testhosts.sh ip I          print host I's address (10.77.0.I+1)
#   testhosts.sh cut I         pull host I's cable (its switch port goes down)
#   testhosts.sh heal I        plug it back in
#   testhosts.sh partition 0,1 2   hosts reach only their own group
#   testhosts.sh unpartition   everyone on one bridge again
#   testhosts.sh status        hosts, addresses, links, processes
#   testhosts.sh agents [FLAGS…]   build shi, its Xen libraries and Xen's
#                              vchan-socket-proxy into $STATE, and start one
#                              agent per host (host 0 bootstraps, the others
#                              join it); FLAGS go to every agent
#   testhosts.sh shi I ARGS…   run the shi CLI inside host I, pointed at its agent
#                              with the management token (SHI_TOKEN)
#
# $STATE (TESTHOSTS_STATE, default /tmp/shi-testhosts) holds the binaries,
# the agents' data, XenStore sockets (hI.sock), local API sockets
# (hI.api.sock), the management token every agent is started with
# (token: -api-token-file, made by the first agent) and logs (hI.log); every
# user may pass through it, since domains run under uids of their own.
# `down` stops the agents with everything else in the hosts.
#
# Host I is namespace ${PREFIX}hI with 10.77.0.(I+1)/24 on eth0; its switch
# port is hI in ${PREFIX}sw. There is no netem on this kernel: delay and
# loss come from the agent's test fault flag; `tc tbf` (via exec) caps
# bandwidth. Needs root and iproute2. TESTHOSTS_PREFIX overrides "shih-".
set -euo pipefail

PREFIX=${TESTHOSTS_PREFIX:-shih-}
SW=${PREFIX}sw
STATE=${TESTHOSTS_STATE:-/tmp/shi-testhosts}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "testhosts: $*" >&2; exit 1; }
usage() { sed -n '2,30s/^# \{0,1\}//p' "$0" >&2; exit 2; }

[[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs ip (iproute2)"

ns_exists() { [[ -e /var/run/netns/$1 ]]; }
host_ns() { echo "${PREFIX}h$1"; }
host_ip() { echo "10.77.0.$(($1 + 1))"; }

# hosts lists the indexes of existing hosts, in order.
hosts() {
	local f
	for f in /var/run/netns/"${PREFIX}"h*; do
		[[ -e $f ]] || continue
		f=${f##*/"${PREFIX}"h}
		[[ $f =~ ^[0-9]+$ ]] && echo "$f"
	done | sort -n
}

check_host() {
	[[ ${1:-} =~ ^[0-9]+$ ]] || die "host index expected, got '${1:-}'"
	ns_exists "$(host_ns "$1")" || die "no host $1 (run: $0 up N)"
}

kill_ns() {
	local pid
	for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
}

del_host() {
	local ns
	ns=$(host_ns "$1")
	kill_ns "$ns"
	ip netns del "$ns" 2>/dev/null || true
	ip -n "$SW" link del "h$1" 2>/dev/null || true
}

ensure_switch() {
	ns_exists "$SW" || ip netns add "$SW"
	if ! ip -n "$SW" link show br0 >/dev/null 2>&1; then
		ip -n "$SW" link add br0 type bridge forward_delay 0
	fi
	ip -n "$SW" link set br0 up
}

ensure_host() {
	local i=$1 ns
	ns=$(host_ns "$i")
	ns_exists "$ns" || ip netns add "$ns"
	if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
		ip -n "$SW" link del "h$i" 2>/dev/null || true
		ip -n "$SW" link add "h$i" type veth peer name eth0 netns "$ns"
	fi
	ip -n "$SW" link set "h$i" master br0 up
	ip -n "$ns" addr replace "$(host_ip "$i")/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
}

flush_neigh() {
	local i
	for i in $(hosts); do ip -n "$(host_ns "$i")" neigh flush all 2>/dev/null || true; done
}

# serving I: host I's agent answers and serves XenStore.
serving() {
	ip netns exec "$(host_ns "$1")" env "SHI_AGENT=http://$(host_ip "$1"):7070" \
		"XENSTORED_PATH=$STATE/h$1.sock" "$STATE/shi" xenstore read /local/domain/0/name >/dev/null 2>&1
}

# start_agents FLAGS...: one agent per host, each waited for in turn (a
# host that joined before host 0 bootstrapped would bootstrap alone).
start_agents() {
	local i n=0 ip0 join
	[[ -n $(hosts) ]] || die "no test hosts (run: $0 up N)"
	mkdir -p "$STATE"
	chmod 1777 "$STATE"
	echo "building shi and the Xen libraries into $STATE" >&2
	(cd "$ROOT" && go build -o "$STATE/shi" ./cmd/shi)
	"$ROOT/scripts/build-libxen.sh" "$STATE/xen" >/dev/null
	local proxy=$ROOT/.cache/xen/usr/lib/xen-4.17/bin/vchan-socket-proxy
	[[ -x $proxy ]] && cp "$proxy" "$STATE/vchan-socket-proxy"
	chmod -R a+rX "$STATE/shi" "$STATE/xen" "$STATE"/vchan-socket-proxy 2>/dev/null || true
	ip0=$(host_ip 0)
	for i in $(hosts); do
		if serving "$i"; then
			echo "host $i: an agent already serves" >&2
			continue
		fi
		join=(-bootstrap-expect 1)
		[[ $i -eq 0 ]] || join=(-join "$ip0" -bootstrap-expect 3)
		rm -rf "$STATE/data$i"
		ip netns exec "$(host_ns "$i")" setsid "$STATE/shi" agent -name "h$i" -bind "$(host_ip "$i")" \
			-data-dir "$STATE/data$i" -xenstore-socket "$STATE/h$i.sock" -xen-libs "$STATE/xen" \
			-api-token-file "$STATE/token" \
			"${join[@]}" "$@" </dev/null >"$STATE/h$i.log" 2>&1 &
		for n in $(seq 300); do
			serving "$i" && break
			kill -0 $! 2>/dev/null || die "host $i's agent exited: $(tail -n 5 "$STATE/h$i.log")"
			((n < 300)) || die "host $i's agent did not serve within 30 s (see $STATE/h$i.log)"
			sleep 0.1
		done
		echo "host $i: agent h$i at http://$(host_ip "$i"):7070 (token in $STATE/token), log $STATE/h$i.log" >&2
	done
}

cmd=${1:-}
[[ -n $cmd ]] || usage
shift

case $cmd in
up)
	n=${1:-}
	[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 250 ]] || die "up N: N from 1 to 250"
	ensure_switch
	for i in $(hosts); do ((i < n)) || del_host "$i"; done
	for ((i = 0; i < n; i++)); do ensure_host "$i"; done
	"$0" status
	;;
down)
	for i in $(hosts); do del_host "$i"; done
	if ns_exists "$SW"; then
		kill_ns "$SW"
		ip netns del "$SW"
	fi
	;;
exec)
	check_host "${1:-}"
	i=$1
	shift
	[[ $# -gt 0 ]] || die "exec I CMD..."
	exec ip netns exec "$(host_ns "$i")" "$@"
	;;
ip)
	check_host "${1:-}"
	host_ip "$1"
	;;
cut)
	check_host "${1:-}"
	ip -n "$SW" link set "h$1" down
	;;
heal)
	check_host "${1:-}"
	ip -n "$SW" link set "h$1" up
	flush_neigh
	;;
partition)
	[[ $# -ge 1 ]] || die "partition GROUP... (each a comma-separated list of hosts)"
	g=0
	for group in "$@"; do
		br=part$g
		ip -n "$SW" link show "$br" >/dev/null 2>&1 || ip -n "$SW" link add "$br" type bridge forward_delay 0
		ip -n "$SW" link set "$br" up
		IFS=, read -ra members <<<"$group"
		for i in "${members[@]}"; do
			check_host "$i"
			ip -n "$SW" link set "h$i" master "$br"
		done
		g=$((g + 1))
	done
	;;
unpartition)
	for i in $(hosts); do ip -n "$SW" link set "h$i" master br0; done
	flush_neigh
	;;
agents)
	start_agents "$@"
	;;
shi)
	check_host "${1:-}"
	i=$1
	shift
	[[ -x $STATE/shi ]] || die "no $STATE/shi (run: $0 agents)"
	exec ip netns exec "$(host_ns "$i")" env "SHI_AGENT=http://$(host_ip "$i"):7070" \
		"SHI_TOKEN=$(cat "$STATE/token" 2>/dev/null)" "XENSTORED_PATH=$STATE/h$i.sock" "$STATE/shi" "$@"
	;;
status)
	ns_exists "$SW" || { echo "no test hosts (prefix $PREFIX)"; exit 0; }
	printf '%-5s %-12s %-14s %-6s %-7s %s\n' HOST NAMESPACE ADDRESS LINK BRIDGE PROCS
	for i in $(hosts); do
		port=$(ip -n "$SW" -o link show "h$i" 2>/dev/null || true)
		link=up
		[[ $port == *"state UP"* ]] || link=cut
		br=$(sed -n 's/.* master \([^ ]*\).*/\1/p' <<<"$port")
		procs=$(ip netns pids "$(host_ns "$i")" 2>/dev/null | wc -l)
		printf '%-5s %-12s %-14s %-6s %-7s %s\n' "$i" "$(host_ns "$i")" "$(host_ip "$i")/24" "$link" "${br:--}" "$procs"
	done
	;;
*)
	usage
	;;
esac
