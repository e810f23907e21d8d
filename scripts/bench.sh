#!/usr/bin/env bash
# Runs the benchmark scenarios of BENCHMARKS.md against real chatr processes
# on 127.0.0.1, with `chatr bench` as the load client (a separate process).
#
#   scripts/bench.sh            short run of every scenario (make bench, < 3 min)
#   scripts/bench.sh full       the longer runs recorded in BENCHMARKS.md
#   scripts/bench.sh idle|fanout|cluster|catchup|failover   one scenario
#   scripts/bench.sh engines    fan-out, 3 nodes and catch-up on each engine,
#                               local then nats (3 nats-servers, R3,
#                               sync_interval: always)
#
# Everything is bounded in time and stays on the loopback interface.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-short}
work=$(mktemp -d /tmp/chatr-bench.XXXXXX)
bin=$work/chatr
pids=()
npids=() # nats-servers (engines)
cleanup() {
	for p in "${pids[@]:-}" "${npids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$bin" ./cmd/chatr

long() { [ "$mode" = full ]; }
want() { [ "$mode" = short ] || [ "$mode" = full ] || [ "$mode" = "$1" ]; }

# Limits a benchmark must lift: one client IP opens every connection (and
# its WebSocket upgrades count as GETs) and makes every room.
open_flags=(--send-rate 1000000 --send-burst 100000 --max-conns 0 --max-conns-per-ip 0 --send-queue 8192
	--get-rate 1000000 --get-burst 100000 --new-rooms-per-minute 100000)

# start NAME HTTPPORT [flags...]: starts a node, waits for /readyz.
start() {
	local name=$1 port=$2
	shift 2
	"$bin" serve --http "127.0.0.1:$port" --data "$work/$name" --node "$name" "${open_flags[@]}" "$@" \
		>"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	disown # no "Killed" lines when it is stopped
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "node $name did not become ready" >&2
	cat "$work/$name.err" >&2
	return 1
}
# start_cluster P H G [flags...]: nodes P1..P3 on HTTP ports H1..H3 and
# gossip ports G1..G3, joined to P1 and sharing one secret; waits until the
# third sees three alive members.
secret=$("$bin" secret)
start_cluster() {
	local p=$1 h=$2 g=$3
	shift 3
	start "${p}1" "${h}1" --cluster-addr "127.0.0.1:${g}1" --secret "$secret" "$@"
	start "${p}2" "${h}2" --cluster-addr "127.0.0.1:${g}2" --join "127.0.0.1:${g}1" --secret "$secret" "$@"
	start "${p}3" "${h}3" --cluster-addr "127.0.0.1:${g}3" --join "127.0.0.1:${g}1" --secret "$secret" "$@"
	for _ in $(seq 100); do
		[ "$(curl -s "http://127.0.0.1:${h}3/chatr/api/cluster" | grep -o '"alive"' | wc -l)" = 3 ] && break
		sleep 0.1
	done
}
pid_of() { pgrep -f -- "--data $work/$1 " | head -1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# metric HTTPPORT NAME: a sample of the node's /metrics, on its admin
# listener (the default --admin-http: 127.0.0.1 and the HTTP port + 10;
# the scenarios run one after the other, so those ports are free).
metric() { curl -s "http://127.0.0.1:$(($1 + 10))/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
# count PORT: messages the node holds, all rooms (the list comes in pages).
count() {
	local after="" total=0 page
	while :; do
		page=$(curl -s "http://127.0.0.1:$1/chatr/api/rooms?limit=1000&after=$after" 2>/dev/null || true)
		total=$((total + $(printf '%s' "$page" | { grep -o '"messages":[0-9]*' || true; } | awk -F: '{s+=$2} END {print s+0}')))
		after=$(printf '%s' "$page" | { grep -o '"next":"[^"]*"' || true; } | cut -d'"' -f4)
		[ -n "$after" ] || break
	done
	echo "$total"
}
stop_all() {
	for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
	pids=()
	sleep 0.5
}

echo "# chatr bench ($mode) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%FT%TZ)"

if want idle; then
	echo
	echo "## 1. Idle connections: server RSS per connection"
	counts=(10000)
	long && counts=(10000 19500)
	for n in "${counts[@]}"; do
		start idle 5301 --pprof
		pid=$(pid_of idle)
		r0=$(rss_kb "$pid")
		ramp=15
		[ "$n" -gt 10000 ] && ramp=30
		"$bin" bench --url ws://127.0.0.1:5301/chatr/ws --conns "$n" --rooms 100 --senders 0 --rate 0 \
			--ramp "${ramp}s" --duration "$((ramp + 45))s" --quiet >"$work/idle.txt" 2>&1 &
		bp=$!
		# Wait for every connection, or for the count to stop growing.
		last=-1
		for _ in $(seq $((ramp + 30))); do
			sleep 1
			cur=$(metric 5301 chatr_ws_sessions)
			[ "$cur" = "$n" ] && break
			[ "$cur" = "$last" ] && [ "$cur" -gt 0 ] && break
			last=$cur
		done
		sleep 10 # idle
		s=$(metric 5301 chatr_ws_sessions)
		r1=$(rss_kb "$pid")
		heap=$(metric 5301 go_memstats_heap_inuse_bytes)
		curl -s "http://127.0.0.1:5311/debug/pprof/heap?gc=1" >/dev/null # the admin listener of 5301
		sleep 1
		r2=$(rss_kb "$pid")
		heap2=$(metric 5301 go_memstats_heap_inuse_bytes)
		awk -v n="$s" -v r0="$r0" -v r1="$r1" -v r2="$r2" -v h="$heap" -v h2="$heap2" 'BEGIN {
			printf "sessions %d: RSS %.1f KB/conn after 10 s idle, %.1f KB/conn after a forced GC; Go heap in use %.1f KB/conn (%.1f after GC)\n",
				n, (r1-r0)/n, (r2-r0)/n, h/1024/n, h2/1024/n }'
		kill "$bp" 2>/dev/null || true
		wait "$bp" 2>/dev/null || true
		stop_all
	done
fi

if want fanout; then
	echo
	echo "## 2. Fan-out: one room of 1000 members, 4 senders, 64-byte messages"
	rates=(100 500 1000 2000)
	long && rates=(100 300 500 1000 1500 2000 3000)
	dur=8s
	long && dur=15s
	for rate in "${rates[@]}"; do
		start fan 5302
		echo "### $rate msg/s = $((rate * 1000)) deliveries/s offered"
		"$bin" bench --url ws://127.0.0.1:5302/chatr/ws --conns 1000 --rooms 1 --senders 4 --rate "$rate" --size 64 \
			--duration "$dur" --ramp 3s --quiet 2>&1 | grep -E "^(messages|deliveries|latency|check|result)" || true
		echo "frames per write: $(awk -v f="$(metric 5302 chatr_ws_frames_out_total)" -v w="$(metric 5302 chatr_ws_writes_total)" 'BEGIN {printf "%.1f", f/w}')"
		stop_all
	done
fi

if want cluster; then
	echo
	echo "## 3-4. Three loopback nodes: cross-node latency and durable replicated throughput"
	start_cluster c 531 731
	urls=ws://127.0.0.1:5311/chatr/ws,ws://127.0.0.1:5312/chatr/ws,ws://127.0.0.1:5313/chatr/ws
	rates=(1000 10000)
	long && rates=(1000 5000 10000 20000)
	for rate in "${rates[@]}"; do
		echo "### $rate msg/s over 3 nodes, 30 rooms of 10 members (each room spans the nodes)"
		"$bin" bench --url "$urls" --conns 300 --rooms 30 --senders 30 --rate "$rate" --size 64 \
			--duration 10s --ramp 2s --quiet 2>&1 | grep -E "^(messages|deliveries|latency|check|result)" || true
	done
	echo "### saturation, closed loop: 60 senders spread over the 3 nodes, 20 rooms of 3 (one member per node), at most 64 unacked sends each"
	"$bin" bench --url "$urls" --conns 60 --rooms 20 --senders 60 --rate 200000 --window 64 --size 64 \
		--duration 10s --ramp 1s --quiet 2>&1 | grep -E "^(messages|latency|check|result)" || true
	if long; then
		echo "### saturation, open loop: the same senders with no window (queues fill; unanswered sends expected)"
		"$bin" bench --url "$urls" --conns 60 --rooms 20 --senders 60 --rate 200000 --size 64 \
			--duration 10s --ramp 1s --quiet 2>&1 | grep -E "^(messages|check|result)" || true
	fi
	echo "stored on every node (local + replicated): $(metric 5311 'chatr_store_messages_total{kind="local"}') local on c1, replicated to c3: $(metric 5313 'chatr_store_messages_total{kind="replicated"}')"
	stop_all
fi

if want catchup; then
	echo
	echo "## Catch-up after a restart, and kill -9 detection"
	start_cluster k 532 732
	kill -9 "$(pid_of k3)"
	t0=$(date +%s%N)
	for _ in $(seq 200); do
		curl -s http://127.0.0.1:5321/chatr/api/cluster | grep -q '"state":"dead"' && break
		sleep 0.05
	done
	echo "kill -9 seen as dead by a peer after $((($(date +%s%N) - t0) / 1000000)) ms"
	n=20000
	long && n=100000
	"$bin" bench --url ws://127.0.0.1:5321/chatr/ws --conns 20 --rooms 20 --senders 20 --rate 50000 --size 64 \
		--duration "$((n / 4000))s" --ramp 1s --quiet >/dev/null 2>&1 || true
	total=$(count 5321)
	t0=$(date +%s%N)
	"$bin" serve --http 127.0.0.1:5323 --data "$work/k3" --node k3 "${open_flags[@]}" \
		--cluster-addr 127.0.0.1:7323 --join 127.0.0.1:7321 --secret "$secret" >"$work/k3.out" 2>"$work/k3.err" &
	pids+=($!)
	disown
	for _ in $(seq 1200); do
		got=$(count 5323)
		[ "${got:-0}" -ge "$total" ] && break
		sleep 0.05
	done
	ms=$((($(date +%s%N) - t0) / 1000000))
	echo "restarted node caught up $got of $total messages in $ms ms (process start included): $((got * 1000 / (ms > 0 ? ms : 1))) msg/s"
	stop_all
fi

if want failover; then
	echo
	echo "## Failover: one node of three is killed (-9); its sessions resume on the other two"
	n=3000
	long && n=10000
	# --ack-replicas 1: an acked message outlives the node that acked it.
	start_cluster f 534 734 --ack-replicas 1
	# Connection i is on URL (i/100) of this list: f3 ten times, so f3 has
	# n sessions and f1, f2 a tenth of that each; the 100 senders (one per
	# room) are on f1. Every room has members on every node.
	urls=ws://127.0.0.1:5341/chatr/ws,ws://127.0.0.1:5342/chatr/ws
	for _ in $(seq 10); do urls=$urls,ws://127.0.0.1:5343/chatr/ws; done
	conns=$((n + n / 5))
	ramp=$((n / 1000 + 2))
	"$bin" bench --url "$urls" --conns "$conns" --rooms 100 --senders 100 --rate 200 --size 64 \
		--ramp "${ramp}s" --duration "$((ramp + 25))s" --drain 10s --failover --quiet >"$work/failover.txt" 2>&1 &
	bp=$!
	for _ in $(seq $((ramp * 4 + 60))); do
		[ "$(metric 5343 chatr_ws_sessions)" = "$n" ] && break
		sleep 0.5
	done
	echo "sessions before: f1 $(metric 5341 chatr_ws_sessions), f2 $(metric 5342 chatr_ws_sessions), f3 $(metric 5343 chatr_ws_sessions)"
	sleep 5 # messages flow
	kill -9 "$(pid_of f3)"
	t0=$(date +%s%N)
	for _ in $(seq 400); do
		[ "$(($(metric 5341 chatr_ws_sessions) + $(metric 5342 chatr_ws_sessions)))" -ge "$conns" ] && break
		sleep 0.05
	done
	echo "all $conns sessions on f1 and f2 $((($(date +%s%N) - t0) / 1000000)) ms after the kill: f1 $(metric 5341 chatr_ws_sessions), f2 $(metric 5342 chatr_ws_sessions)"
	wait "$bp" || true
	grep -E "^(connections|messages|errors|failover|deliveries|latency|check|result)" "$work/failover.txt" || cat "$work/failover.txt"
	stop_all
fi

if [ "$mode" = engines ]; then
	echo
	echo "## Both engines, one run: local, then nats (3 nats-servers, stream R3, sync_interval: always)"
	go build -o "$work/natsnode" ./internal/natstest/natsnode
	natsurl=nats://127.0.0.1:4331,nats://127.0.0.1:4332,nats://127.0.0.1:4333
	stop_nats() {
		for p in "${npids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
		npids=()
		sleep 1
	}
	# nats_server I STORE: starts nats-server I (1-3) of the cluster, store
	# in $work/natsI-STORE, monitoring on 833I; nats_ready I waits for it.
	nats_server() {
		"$work/natsnode" -name "n$1" -port "433$1" -cluster-port "633$1" -http-port "833$1" -store "$work/nats$1-$2" \
			-routes nats://127.0.0.1:6331,nats://127.0.0.1:6332,nats://127.0.0.1:6333 >"$work/nats$1.out" 2>&1 &
		npids[$1 - 1]=$!
		disown
	}
	nats_ready() { for _ in $(seq 100); do grep -q ready "$work/nats$1.out" && break; sleep 0.1; done; }
	start_nats() {
		for i in 1 2 3; do nats_server "$i" "$1"; done
		for i in 1 2 3; do nats_ready "$i"; done
		sleep 3 # a meta leader
	}
	# stream_msgs I: the messages of the stream CHATR that nats-server I holds.
	stream_msgs() {
		curl -s "http://127.0.0.1:833$1/jsz?streams=true" | awk '/"name": "CHATR"/ {f = 1} f && /"messages":/ {gsub(/[^0-9]/, ""); print; exit}'
	}
	# missed_load: messages sent to e1 and e2 (64 bytes, 20 rooms) while
	# the third store member is down.
	missed_load() {
		"$bin" bench --url ws://127.0.0.1:5311/chatr/ws,ws://127.0.0.1:5312/chatr/ws --conns 20 --rooms 20 --senders 20 \
			--rate 50000 --size 64 --duration "$(($1 / 4000))s" --ramp 1s --quiet >/dev/null 2>&1 || true
	}
	for eng in local nats; do
		echo
		echo "### engine $eng"
		flags=()
		if [ "$eng" = nats ]; then
			start_nats fan
			flags=(--engine nats --nats-url "$natsurl" --nats-replicas 3)
		fi
		for rate in 500 2000; do
			start "fan-$eng-$rate" 5302 "${flags[@]}"
			echo "fan-out, 1 room of 1000, $rate msg/s:"
			"$bin" bench --url ws://127.0.0.1:5302/chatr/ws --conns 1000 --rooms 1 --senders 4 --rate "$rate" --size 64 \
				--duration 8s --ramp 3s --quiet 2>&1 | grep -E "^(messages|latency|check|result)" || true
			stop_all
		done
		if [ "$eng" = nats ]; then
			stop_nats
			start_nats cl
			for i in 1 2 3; do start "e$i" "531$i" "${flags[@]}"; done
		else
			start_cluster e 531 731
		fi
		urls=ws://127.0.0.1:5311/chatr/ws,ws://127.0.0.1:5312/chatr/ws,ws://127.0.0.1:5313/chatr/ws
		for rate in 1000 10000; do
			echo "3 nodes, $rate msg/s, 30 rooms of 10 (cross-node):"
			"$bin" bench --url "$urls" --conns 300 --rooms 30 --senders 30 --rate "$rate" --size 64 \
				--duration 10s --ramp 2s --quiet 2>&1 | grep -E "^(messages|latency|check|result)" || true
		done
		echo "3 nodes, closed loop: 60 senders, window 64:"
		"$bin" bench --url "$urls" --conns 60 --rooms 20 --senders 60 --rate 200000 --window 64 --size 64 \
			--duration 10s --ramp 1s --quiet 2>&1 | grep -E "^(messages|latency|check|result)" || true
		if [ "$eng" = nats ]; then
			echo "NATS servers' CPU (user+system seconds, since start): $(for p in "${npids[@]}"; do awk '{print ($14+$15)/100}' "/proc/$p/stat"; done | paste -sd+ | bc)"
		fi
		# Catch-up: the third member of the store (chatr node e3, or
		# nats-server n3) is killed -9, messages are sent, it restarts on its
		# own data and takes what it missed from the others.
		n=20000
		long && n=100000
		if [ "$eng" = nats ]; then
			before=$(stream_msgs 3)
			kill -9 "${npids[2]}"
			missed_load "$n"
			total=$(stream_msgs 1)
			t0=$(date +%s%N)
			nats_server 3 cl
			nats_ready 3
			for _ in $(seq 1200); do
				got=$(stream_msgs 3)
				[ "${got:-0}" -ge "$total" ] && break
				sleep 0.05
			done
			who="nats-server n3"
		else
			before=$(count 5313)
			kill -9 "$(pid_of e3)"
			missed_load "$n"
			total=$(count 5311)
			t0=$(date +%s%N)
			start e3 5313 --cluster-addr 127.0.0.1:7313 --join 127.0.0.1:7311 --secret "$secret"
			for _ in $(seq 1200); do
				got=$(count 5313)
				[ "${got:-0}" -ge "$total" ] && break
				sleep 0.05
			done
			who="chatr node e3"
		fi
		ms=$((($(date +%s%N) - t0) / 1000000))
		echo "catch-up: $who killed -9, restarted, took $((got - before)) of the $((total - before)) messages it missed in $ms ms (process start included): $(((got - before) * 1000 / (ms > 0 ? ms : 1))) msg/s"
		stop_all
		stop_nats
	done
fi
