#!/usr/bin/env bash
# bench-remote.sh — shi's event channels and granted rings between two
# hosts against TCP between the same two hosts, in one run: two test hosts
# (network namespaces on a bridge, scripts/testhosts.sh), one agent each,
# and the runs of both paths alternating so that both see the same load.
#
#   scripts/bench-remote.sh [evtchn|ring|all]   (default all; root; ~4 min)
#   scripts/bench-remote.sh vchan               (not part of all)
#   scripts/bench-remote.sh disk                (not part of all; ~3 min)
#   RUNS=5 scripts/bench-remote.sh              more rounds (default 3)
#
# evtchn: "shi bench evtchn -hosts h0,h1" (an event round trip between a
#   domain on each host) against a TCP ping-pong of 16-byte messages (a
#   link's event frame) between a process on each host, TCP_NODELAY and
#   raw system calls on both ends ("shi benchtcp ping").
# ring: "shi bench ring -hosts h0,h1" (1 GiB from a domain on h1 to one on
#   h0 through a granted 4 MiB ring in 64 KiB writes, and the map and
#   unmap of a grant of the other host) against one TCP stream from h1 to
#   h0 in the same writes ("shi benchtcp stream").
#   TLS=1 adds a phase "tls" after the undelayed one: the agents restarted
#   with mutual TLS (certificates made with "shi tls", so Raft, the data
#   plane and the API run over TLS), shi bench ring against one stream
#   inside TLS between the same hosts with the same certificates ("shi
#   benchtcp stream -tls-*", crypto/tls as the agents use). Its ratio
#   prints as "remote ring throughput / tls throughput (tls)".
# vchan: "shi bench vchan -hosts h0,h1" (1 GiB from a domain on h1 to one
#   on h0 through guest/vchan with 1 MiB rings in 64 KiB writes, then
#   16-byte round trips) against the same TCP stream and ping-pong.
# disk: "shi bench disk -hosts h0,h1": fio's nbd engine on h0 through the
#   NBD socket of a domain on h0 whose disk's back end is on h1 (a remote
#   disk) against the same fio on h0 through nbdkit's file plugin serving
#   the same image on h1 over TCP; 4k random reads at queue depth 32 (the
#   headline) and 1, 4k random writes, 1 MiB sequential reads and writes.
#   One phase (no fault hook, no delay); the last line (goal: at least 0.8) is
#     remote disk 4k randread QD32 iops / nbdkit iops = X
#   Knobs: DISK_MIB (the image, 256), DISK_RUNTIME (each fio run, 5s),
#   RUNS (rounds, 3).
#
# Each runs in two phases. First between agents without the fault hook:
# the links are the TCP sockets the agents hand to the domains, the path
# users get. Then between agents restarted with -test-faults and 1 ms of
# one-way delay on both (256 MiB per stream run there, to keep the run
# short), while the baseline's two ends wrap their sockets in the same
# delay, internal/faultnet's, the code the agents delay the links with:
# every write on either path is held back 1 ms before it enters the
# kernel, with the same timer granularity. (Agents with the hook relay
# every link through a socketpair, even without delay, which is why the
# undelayed phase runs without it; RELAY=1 measures that relay alone.)
# The kernel's ACKs are delayed on neither path, so TCP's window is not
# slowed by the delay while the ring's, its consumer index, is: the
# delayed ring ratio is harsher on shi than a real 1 ms link would be.
#
# The last lines are the ratios, the undelayed ones last:
#
#   remote evtchn round trip / tcp round trip = X    (goal: at most 1.3)
#   remote ring throughput / tcp throughput = X      (goal: at least 0.8)
#   remote vchan round trip / tcp round trip = X      (vchan only)
#   remote vchan throughput / tcp throughput = X     (vchan only; goal: at least 0.8)
#
# Knobs: RUNS (rounds per phase, 3; each round runs each program once,
# 3 runs each), ROUNDS (round trips per run, 10000; DELAY_ROUNDS 500),
# MIB (MiB per stream run, 1024; DELAY_MIB 256), CHUNK (KiB per write,
# 64), MAPS (grant map+unmap cycles, 2000; DELAY_MAPS 200), DELAY_MS (1),
# RELAY=1 (the extra phase), LOG (the programs' output, kept;
# /tmp/shi-bench-remote.PID.log), PROFILE=DIR (a CPU profile of each
# shi domain into DIR/PHASE, made writable for the domains' uids; a run
# overwrites the profiles of an earlier one with the same domain ids). Needs root, iproute2 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-remote: $*" >&2; exit 1; }

what=${1:-all}
case $what in
evtchn | ring | vchan | disk | all) ;;
-h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;;
*) die "unknown benchmark '$what' (evtchn, ring, vchan, disk or all)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "test hosts need root (network namespaces)"
command -v ip >/dev/null || die "needs ip (iproute2)"
command -v curl >/dev/null || die "needs curl (to set the agents' fault hook)"

RUNS=${RUNS:-3}
ROUNDS=${ROUNDS:-10000}
DELAY_ROUNDS=${DELAY_ROUNDS:-500}
MIB=${MIB:-1024}
DELAY_MIB=${DELAY_MIB:-256}
CHUNK=${CHUNK:-64}
MAPS=${MAPS:-2000}
DELAY_MAPS=${DELAY_MAPS:-200}
DELAY_MS=${DELAY_MS:-1}
INNER=3 # runs per invocation of each program
profile=() # -cpuprofile DIR/PHASE, set by phase

# The hosts get a prefix of their own, with this shell's pid in it, so
# they clash neither with a user's testhosts.sh hosts (shih-) nor with
# the tests' (shint-), nor with another run of this script.
export TESTHOSTS_PREFIX="shibr$$-"
ns0=${TESTHOSTS_PREFIX}h0
ns1=${TESTHOSTS_PREFIX}h1
ip0=10.77.0.1 # host 0: the TCP server, and the benchmarks' vantage
tcpport=7999

work=$(mktemp -d /tmp/shi-bench-remote.XXXXXX)
# Domains run under uids of their own: they must reach the XenStore
# sockets and the shi binary in here.
chmod 755 "$work"
LOG=${LOG:-/tmp/shi-bench-remote.$$.log}
declare -A pids=()

# Remove what a killed run of this script left (its pid is gone).
for f in /var/run/netns/shibr*-sw; do
	[[ -e $f ]] || continue
	n=${f##*/shibr}
	pid=${n%%-*}
	[[ $pid =~ ^[0-9]+$ ]] || continue
	if ! kill -0 "$pid" 2>/dev/null; then
		TESTHOSTS_PREFIX="shibr$pid-" scripts/testhosts.sh down || true
	fi
done

# running PID...: whether any of them runs.
running() {
	local p
	for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
	return 1
}

# stop PID...: SIGTERM, up to 5 s to exit, then SIGKILL.
stop() {
	local p
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for _ in $(seq 50); do
		running "$@" || break
		sleep 0.1
	done
	for p in "$@"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ ${#pids[@]} -eq 0 ]] || stop "${pids[@]}"
	# Domains die with their agent (a parent-death signal); whatever else
	# still runs in the hosts dies with them.
	scripts/testhosts.sh down >/dev/null 2>&1 || true
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building shi"
go build -o "$work/shi" ./cmd/shi
shi=$work/shi
chmod 755 "$shi"

scripts/testhosts.sh up 2 >/dev/null

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The agents' management token (-api-token-file), which the CLI and curl
# present.
(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$work/token")
token=$(cat "$work/token")

# scheme and cacert are how the CLI reaches the agents: https and the
# cluster's CA in the TLS phase.
scheme=http
cacert=()
tlsdir=
# env0 points the CLI at host 0's agent.
env0=(env "SHI_AGENT=http://$ip0:7070" "SHI_TOKEN=$token" "XENSTORED_PATH=$work/h0.sock")

# fail_agents MESSAGE: fails with the tails of the agents' logs, whose
# whole go to the end of $LOG.
fail_agents() {
	local i
	echo "bench-remote: $*" >&2
	for i in 0 1; do
		if [[ -f $work/agent$i.log ]]; then
			echo "--- the last lines of host $i's agent:" >&2
			tail -n 30 "$work/agent$i.log" >&2
			{ echo "--- host $i's agent"; cat "$work/agent$i.log"; } >>"$LOG"
		fi
	done
	echo "--- the agents' whole logs are at the end of $LOG" >&2
	exit 1
}

# start_agent I [FLAGS...] starts host I's agent on a fresh data dir.
# Host 0 bootstraps the directory alone (-bootstrap-expect 1). Host 1
# must join it, never bootstrap: an agent first contacts its -join hosts
# only after the membership reconnect interval (10 s), and with
# -bootstrap-expect 1 it would bootstrap a cluster of its own long
# before; with 3 it waits for a third host, which never comes, and joins
# host 0's cluster as a non-voter instead.
start_agent() {
	local i=$1 ns ip join=(-bootstrap-expect 1)
	shift
	ns=${TESTHOSTS_PREFIX}h$i
	ip=10.77.0.$((i + 1))
	[[ $i -eq 0 ]] || join=(-join "$ip0" -bootstrap-expect 3)
	[[ -z $tlsdir ]] || set -- "$@" -tls-ca "$tlsdir/shi-agent-ca.pem" \
		-tls-cert "$tlsdir/shi-agent-h$i.pem" -tls-key "$tlsdir/shi-agent-h$i-key.pem"
	rm -rf "$work/data$i"
	ip netns exec "$ns" "$shi" agent -name "h$i" -data-dir "$work/data$i" -bind "$ip" \
		"${join[@]}" -xenstore-socket "$work/h$i.sock" -api-token-file "$work/token" "$@" \
		>"$work/agent$i.log" 2>&1 &
	pids[agent$i]=$!
}

stop_agents() {
	stop "${pids[agent0]}" "${pids[agent1]}"
	unset "pids[agent0]" "pids[agent1]"
}

# alive I: host I's agent sees both hosts alive and a leader, and serves
# XenStore.
alive() {
	local i=$1 ns ip out
	ns=${TESTHOSTS_PREFIX}h$i
	ip=10.77.0.$((i + 1))
	out=$(in_ns "$ns" env "SHI_AGENT=$scheme://$ip:7070" "${cacert[@]}" "SHI_TOKEN=$token" "$shi" nodes 2>/dev/null) || return 1
	awk '$1 == "h0" && $3 == "alive" { a++ } $1 == "h1" && $3 == "alive" { b++ } $4 == "leader" { l++ }
		END { exit !(a && b && l) }' <<<"$out" || return 1
	in_ns "$ns" env "XENSTORED_PATH=$work/h$i.sock" "$shi" xenstore read /local/domain/0/name >/dev/null 2>&1
}

# start_cluster [FLAGS...]: host 0's agent bootstraps alone, then host 1's
# joins it.
start_cluster() {
	local i
	start_agent 0 "$@"
	for i in $(seq 300); do
		kill -0 "${pids[agent0]}" 2>/dev/null || fail_agents "host 0's agent exited"
		in_ns "$ns0" env "XENSTORED_PATH=$work/h0.sock" "$shi" xenstore read /local/domain/0/name >/dev/null 2>&1 && break
		[[ $i -lt 300 ]] || fail_agents "host 0's agent did not serve within 30 s"
		sleep 0.1
	done
	start_agent 1 "$@"
	for i in $(seq 600); do
		kill -0 "${pids[agent0]}" 2>/dev/null || fail_agents "host 0's agent exited"
		kill -0 "${pids[agent1]}" 2>/dev/null || fail_agents "host 1's agent exited"
		alive 0 && alive 1 && return 0
		sleep 0.1
	done
	fail_agents "the two agents did not see each other alive within 60 s"
}

set_delay() {
	local i ip
	for i in 0 1; do
		ip=10.77.0.$((i + 1))
		in_ns "${TESTHOSTS_PREFIX}h$i" curl -sSf -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
			-d "{\"delay_ms\": $1}" "http://$ip:7070/v1/internal/faults" ||
			fail_agents "cannot set the fault hook on host $i's agent"
	done
}

start_tcp_server() {
	ip netns exec "$ns0" "$shi" benchtcp serve -listen "$ip0:$tcpport" >"$work/tcp.log" 2>&1 &
	pids[tcp]=$!
	for _ in $(seq 100); do
		grep -q "listening" "$work/tcp.log" && return 0
		kill -0 "${pids[tcp]}" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/tcp.log" >&2
	die "the TCP baseline server did not start"
}

# run CMD...: runs a benchmark program, its output into the log; on
# failure the agents' log tails explain.
run() {
	local rc=0
	"$@" >"$work/out" 2>&1 || rc=$?
	cat "$work/out" >>"$LOG"
	tail -n 1 "$work/out"
	[[ $rc -eq 0 ]] || { cat "$work/out" >&2; fail_agents "failed ($rc): $*"; }
}

tcp_ping() { run in_ns "$ns1" "$shi" benchtcp ping -addr "$ip0:$tcpport" -runs "$INNER" "$@"; }
tcp_stream() { run in_ns "$ns1" "$shi" benchtcp stream -addr "$ip0:$tcpport" -runs "$INNER" -chunk "$CHUNK" "$@"; }
shi_evtchn() { run in_ns "$ns0" "${env0[@]}" "$shi" bench evtchn -hosts h0,h1 -runs "$INNER" "${profile[@]}" "$@"; }
shi_ring() { run in_ns "$ns0" "${env0[@]}" "$shi" bench ring -hosts h0,h1 -runs "$INNER" -chunk "$CHUNK" "${profile[@]}" "$@"; }
shi_vchan() { run in_ns "$ns0" "${env0[@]}" "$shi" bench vchan -hosts h0,h1 -runs "$INNER" -chunk "$CHUNK" "${profile[@]}" "$@"; }

# tls_phase: the agents restarted with mutual TLS, RUNS rounds of shi's
# ring against the TLS stream, then back to plain TCP for what follows.
tls_phase() {
	local r
	echo "restarting the agents with mutual TLS (shi tls ca create, shi tls cert create)"
	stop_agents
	tlsdir=$work/tls
	"$shi" tls ca create -dir "$tlsdir" >/dev/null
	"$shi" tls cert create -dir "$tlsdir" -node h0 -ip "$ip0" >/dev/null
	"$shi" tls cert create -dir "$tlsdir" -node h1 -ip 10.77.0.2 >/dev/null
	chmod 755 "$tlsdir"
	scheme=https
	cacert=("SHI_CACERT=$tlsdir/shi-agent-ca.pem")
	env0=(env "SHI_AGENT=https://$ip0:7070" "${cacert[@]}" "SHI_TOKEN=$token" "XENSTORED_PATH=$work/h0.sock")
	start_cluster
	ip netns exec "$ns0" "$shi" benchtcp serve -listen "$ip0:$((tcpport - 1))" -tls-listen "$ip0:$tlsport" \
		-tls-ca "$tlsdir/shi-agent-ca.pem" -tls-cert "$tlsdir/shi-agent-h0.pem" -tls-key "$tlsdir/shi-agent-h0-key.pem" \
		>"$work/tls.log" 2>&1 &
	pids[tls]=$!
	for _ in $(seq 100); do
		grep -q "tls listening" "$work/tls.log" && break
		kill -0 "${pids[tls]}" 2>/dev/null || { cat "$work/tls.log" >&2; die "the TLS baseline server did not start"; }
		sleep 0.1
	done
	echo "== phase: tls" | tee -a "$LOG"
	for r in $(seq "$RUNS"); do
		echo "== round: $r" | tee -a "$LOG"
		if ((r % 2)); then
			tls_stream
			shi_ring -mib "$MIB" -maps "$MAPS"
		else
			shi_ring -mib "$MIB" -maps "$MAPS"
			tls_stream
		fi
	done
	stop "${pids[tls]}"
	unset "pids[tls]"
	tlsdir= scheme=http cacert=()
	env0=(env "SHI_AGENT=http://$ip0:7070" "SHI_TOKEN=$token" "XENSTORED_PATH=$work/h0.sock")
}

tlsport=7997
tls_stream() {
	run in_ns "$ns1" "$shi" benchtcp stream -addr "$ip0:$tlsport" -runs "$INNER" -chunk "$CHUNK" -mib "$MIB" \
		-tls-ca "$tlsdir/shi-agent-ca.pem" -tls-cert "$tlsdir/shi-agent-h1.pem" -tls-key "$tlsdir/shi-agent-h1-key.pem"
}

# phase NAME DELAY_MS ROUNDS MIB MAPS: RUNS rounds of each benchmark, the
# baseline first in odd rounds and second in even ones.
phase() {
	local name=$1 delay=$2 rounds=$3 mib=$4 maps=$5 r
	echo "== phase: $name" | tee -a "$LOG"
	if [[ -n ${PROFILE:-} ]]; then
		profile=(-cpuprofile "$PROFILE/${name// /-}")
		mkdir -p "${profile[1]}"
		chmod 1777 "$PROFILE" "${profile[1]}"
	fi
	for r in $(seq "$RUNS"); do
		echo "== round: $r" | tee -a "$LOG"
		if [[ $what == evtchn || $what == all ]]; then
			if ((r % 2)); then
				tcp_ping -rounds "$rounds" -delay-ms "$delay"
				shi_evtchn -rounds "$rounds"
			else
				shi_evtchn -rounds "$rounds"
				tcp_ping -rounds "$rounds" -delay-ms "$delay"
			fi
		fi
		if [[ $what == vchan ]]; then
			if ((r % 2)); then
				tcp_ping -rounds "$rounds" -delay-ms "$delay"
				tcp_stream -mib "$mib" -delay-ms "$delay"
				shi_vchan -mib "$mib" -rounds "$rounds"
			else
				shi_vchan -mib "$mib" -rounds "$rounds"
				tcp_ping -rounds "$rounds" -delay-ms "$delay"
				tcp_stream -mib "$mib" -delay-ms "$delay"
			fi
		fi
		if [[ $what == ring || $what == all ]]; then
			if ((r % 2)); then
				tcp_stream -mib "$mib" -delay-ms "$delay"
				shi_ring -mib "$mib" -maps "$maps"
			else
				shi_ring -mib "$mib" -maps "$maps"
				tcp_stream -mib "$mib" -delay-ms "$delay"
			fi
		fi
	done
}

: >"$LOG"
if [[ $what == disk ]]; then
	ip1=10.77.0.2
	nbdport=10810 # not 10809, shi disk export's default
	command -v nbdkit >/dev/null || die "needs nbdkit (scripts/deps.sh)"
	img=$work/disk.img
	head -c "$((${DISK_MIB:-256} << 20))" /dev/urandom >"$img"
	chmod 666 "$img" # the back end's driver domain runs under a uid of its own
	echo "starting two agents on test hosts $ns0 and $ns1"
	start_cluster
	in_ns "$ns1" nbdkit --foreground -i "$ip1" -p "$nbdport" file "$img" >"$work/nbdkit.log" 2>&1 &
	pids[nbdkit]=$!
	for i in $(seq 100); do
		in_ns "$ns0" nbdinfo --size "nbd://$ip1:$nbdport/" >/dev/null 2>&1 && break
		kill -0 "${pids[nbdkit]}" 2>/dev/null || { cat "$work/nbdkit.log" >&2; die "nbdkit exited"; }
		[[ $i -lt 100 ]] || { cat "$work/nbdkit.log" >&2; die "nbdkit does not serve on $ip1:$nbdport"; }
		sleep 0.1
	done
	rc=0
	in_ns "$ns0" "${env0[@]}" "$shi" bench disk -hosts h0,h1 -image "$img" -nbdkit "nbd://$ip1:$nbdport/" \
		-runs "$RUNS" -runtime "${DISK_RUNTIME:-5s}" >"$work/out" 2>&1 || rc=$?
	cat "$work/out" >>"$LOG"
	[[ $rc -eq 0 ]] || { cat "$work/out" >&2; fail_agents "shi bench disk failed ($rc)"; }
	echo
	echo "a remote disk (domain on h0, back end on h1) vs nbdkit on h1 over TCP, fio on h0 (log: $LOG)"
	cat "$work/out"
	exit 0
fi
start_tcp_server
echo "starting two agents (no fault hook) on test hosts $ns0 and $ns1"
start_cluster
phase "no delay" 0 "$ROUNDS" "$MIB" "$MAPS"
if [[ ${TLS:-0} == 1 && ($what == ring || $what == all) ]]; then
	tls_phase
fi

echo "restarting the agents with -test-faults, $DELAY_MS ms of one-way delay on both"
stop_agents
start_cluster -test-faults
if [[ ${RELAY:-0} == 1 ]]; then
	phase "fault hook, no delay" 0 "$ROUNDS" "$MIB" "$MAPS"
fi
set_delay "$DELAY_MS"
phase "$DELAY_MS ms delay" "$DELAY_MS" "$DELAY_ROUNDS" "$DELAY_MIB" "$DELAY_MAPS"

echo
echo "shi between two test hosts vs TCP between the same hosts, $RUNS rounds of $INNER runs each (log: $LOG)"
"$shi" benchtcp summary -headline "no delay" "$LOG"
