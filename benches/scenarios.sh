#!/usr/bin/env bash
# The BENCHMARKS.md scenarios, against release builds, each bounded in time.
#
#   cargo build --release --bins    # the gateway and fanout-bench (tools/fanout-bench)
#   benches/scenarios.sh [idle|idle-2k|broadcast|channels|cluster|latency|small-fanout|large-fanout|light-latency|redis-cluster ...]
#   (default: idle broadcast channels cluster latency). BIN=<dir> runs other binaries (a
#   before/after comparison), OUT=<dir> writes the reports elsewhere.
#
#   TRANSPORT=sse runs any of them with Server-Sent Events clients (`fanout-bench
#   --transport sse`: one `GET /sse?token=..&channel=..` per connection, same channels,
#   same counting) instead of WebSocket ones (TRANSPORT=ws, the default); SSE reports are
#   written as <scenario>-sse.json next to the WebSocket ones.
#
# Starts its own redis-server and gateways on free loopback ports, runs fanout-bench, and
# writes one JSON report per run to target/bench-results/. Set RATES="10 20 50" to change
# the broadcast steps, LATENCY_RATE for the latency run, IDLE_CONNECTIONS for the idle run,
# GATEWAY_FLAGS for more gateway flags (GATEWAY_FLAGS="--write-delay-ms 20").
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
SECRET=bench-secret-bench-secret-bench-secret
OUT=${OUT:-target/bench-results}
TRANSPORT=${TRANSPORT:-ws}
case "$TRANSPORT" in
  ws) SUFFIX="" ;;
  sse) SUFFIX="-sse" ;;
  *) echo "TRANSPORT must be ws or sse, not '$TRANSPORT'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
PIDS=()
REDIS_PORT=""

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  [ -n "$REDIS_PORT" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  for p in "${CLUSTER_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  [ -n "${CLUSTER_DIR:-}" ] && rm -rf "$CLUSTER_DIR"
  PIDS=(); REDIS_PORT=""; CLUSTER_PIDS=(); CLUSTER_PORTS=(); CLUSTER_DIR=""
}
trap cleanup EXIT

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --logfile /dev/null --dir /tmp
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
}

# start_gateway NAME BROKER_FLAGS...: one gateway on a free port, added to URLS and GW_PIDS
# once it is ready.
start_gateway() {
  local name=$1 port; shift; port=$(free_port)
  "$BIN/fanout" serve --listen "127.0.0.1:$port" --node-id "$name" --jwt-secret "$SECRET" \
    --api-key bench-key "$@" \
    --max-connections 200000 --max-new-connections-per-s 100000 \
    --max-connections-per-user 100000 --log-level warn ${GATEWAY_FLAGS:-} &
  PIDS+=($!)
  URLS="${URLS:+$URLS,}ws://127.0.0.1:$port/ws"
  GW_PIDS="${GW_PIDS:+$GW_PIDS,}$!"
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
}

# start_nodes N: N gateways on the Redis of start_redis; sets URLS and GW_PIDS.
start_nodes() {
  URLS=""; GW_PIDS=""
  for i in $(seq 1 "$1"); do
    start_gateway "n$i" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
  done
}

# start_cluster: a Redis Cluster of 3 masters and 3 replicas (own directories, bus ports
# chosen free); sets CLUSTER_PORTS (the first three are where --cluster create puts masters)
# and REDIS_PORT (one node, for fanout-bench's --redis-url, unused with --publish http).
start_cluster() {
  CLUSTER_DIR=$(mktemp -d); CLUSTER_PORTS=(); CLUSTER_PIDS=()
  for i in 1 2 3 4 5 6; do
    local port bus; port=$(free_port); bus=$(free_port)
    mkdir -p "$CLUSTER_DIR/$port"
    (cd "$CLUSTER_DIR/$port" && exec redis-server --port "$port" --cluster-port "$bus" \
      --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf --save '' \
      --appendonly no --logfile '' >/dev/null 2>&1) &
    CLUSTER_PIDS+=($!); CLUSTER_PORTS+=("$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
    --cluster-replicas 1 --cluster-yes >/dev/null
  for port in "${CLUSTER_PORTS[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
  done
  REDIS_PORT=""
}

# start_cluster_nodes MODE: three gateways on the cluster; MODE sharded (redis_cluster_url)
# or classic (each gateway's redis_url on another master: classic pub/sub, which the cluster
# forwards to every node). Sets URLS and GW_PIDS.
start_cluster_nodes() {
  URLS=""; GW_PIDS=""
  for i in 1 2 3; do
    if [ "$1" = sharded ]; then
      start_gateway "n$i" --redis-cluster-url "redis://127.0.0.1:${CLUSTER_PORTS[0]}"
    else
      start_gateway "n$i" --redis-url "redis://127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}/"
    fi
  done
}

# CPU seconds (user + system) of the cluster's redis-server processes so far.
cluster_cpu() {
  local ticks=0 hz; hz=$(getconf CLK_TCK)
  for p in "${CLUSTER_PIDS[@]}"; do
    local pid; pid=$(pgrep -P "$p" redis-server || echo "$p")
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "scale=2; $ticks / $hz" | bc
}

scenario_redis-cluster() {
  # The same load on the same kind of cluster, sharded (redis_cluster_url) and classic pub/sub;
  # published through the first gateway's HTTP API (SPUBLISH or PUBLISH).
  for mode in sharded classic; do
    start_cluster; start_cluster_nodes "$mode"
    local before after; before=$(cluster_cpu)
    REDIS_PORT=${CLUSTER_PORTS[0]}
    bench "redis-cluster-$mode" --connections 10000 --channels 1000 \
      --rate "${CLUSTER_CHANNELS_RATE:-10000}" --duration 10 --settle 5 \
      --publish http --api-key bench-key
    REDIS_PORT=""
    after=$(cluster_cpu)
    echo "   redis-server CPU, all six nodes: $(echo "$after - $before" | bc) s" >&2
    cleanup
  done
}

bench() { # bench NAME ARGS...
  local name=$1$SUFFIX; shift
  echo "== $name: fanout-bench --transport $TRANSPORT $*" >&2
  "$BIN/fanout-bench" --jwt-secret "$SECRET" --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
    --url "$URLS" --gateway-pid "$GW_PIDS" --transport "$TRANSPORT" --json --quiet "$@" \
    > "$OUT/$name.json" || true
  python3 - "$OUT/$name.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
g = r["gateways"]
errors = f', connect errors {r["connect_errors"]}' if r["connect_errors"] else ''
print(f'   {r["transport"]}: {r["connected"]}/{r["connections"]} conns{errors}, {r["delivered"]}/{r["expected"]} delivered, '
      f'{r["deliveries_per_s"]:.0f}/s, p50 {r["latency_ms"]["p50"]:.2f} ms, p99 {r["latency_ms"]["p99"]:.2f} ms, max {r["latency_ms"]["max"]:.2f} ms, '
      f'{r["deliveries_per_cpu_s"]:.0f} deliveries/CPU-s, '
      f'gateway CPU {sum(x["cpu_per_s"] for x in g):.2f} cores, '
      f'RSS/conn {sum(x["rss_per_connection_bytes"] for x in g)/max(len(g),1):.0f} B '
      f'(end {sum(x["rss_per_connection_end_bytes"] for x in g)/max(len(g),1):.0f} B)')
s = r["slow_deliveries"]
if s["count"]:
    print(f'   slower than {s["threshold_ms"]:.0f} ms: {s["count"]} deliveries; hypervisor steal {r["steal_s"]:.2} CPU-s; '
          f'gateway major page faults {sum(x["major_faults"] for x in g)}; worst episodes:')
    for e in s["episodes"][:3]:
        print(f'     at {e["at_s"]:.2f} s: {e["deliveries"]} deliveries, {e["messages"]} messages over {e["span_ms"]:.0f} ms, '
              f'{e["clients"]} clients, max {e["max_ms"]:.1f} ms')
PY
}

scenario_idle() {
  start_redis; start_nodes 1
  bench idle-10k --connections 10000 --rate 0 --duration 30
  cleanup
  start_redis; start_nodes 1
  # One process may hold at most `ulimit -Hn` descriptors (20,000 here).
  bench "idle-${IDLE_CONNECTIONS:-18000}" --connections "${IDLE_CONNECTIONS:-18000}" --rate 0 --duration 30 --connect-rate 3000
  cleanup
}

scenario_idle-2k() { # 2,000 idle connections: RSS per connection, WS vs TRANSPORT=sse
  start_redis; start_nodes 1
  bench idle-2k --connections 2000 --rate 0 --duration 20
  cleanup
}

scenario_broadcast() {
  for rate in ${RATES:-10 20 30 40 60}; do
    start_redis; start_nodes 1
    bench "broadcast-$rate" --connections 10000 --channels 1 --rate "$rate" --duration 10 --settle 5
    cleanup
  done
}

scenario_channels() {
  for rate in ${CHANNEL_RATES:-10000}; do
    start_redis; start_nodes 1
    bench "many-channels-$rate" --connections 10000 --channels 1000 --rate "$rate" --duration 10 --settle 5
    cleanup
  done
}

scenario_cluster() {
  start_redis; start_nodes 3
  bench cluster-broadcast --connections 10000 --channels 1 --rate "${CLUSTER_RATE:-20}" --duration 10 --settle 5
  cleanup
  start_redis; start_nodes 3
  bench cluster-many-channels --connections 10000 --channels 1000 --rate 10000 --duration 10 --settle 5
  cleanup
}

scenario_latency() {
  # At half the sustained maximum of the broadcast and the many-channels scenarios.
  start_redis; start_nodes 1
  bench latency-broadcast --connections 10000 --channels 1 --rate "${LATENCY_BROADCAST_RATE:-75}" --duration 20 --settle 5
  cleanup
  start_redis; start_nodes 1
  bench latency-many-channels --connections 10000 --channels 1000 --rate "${LATENCY_CHANNELS_RATE:-15000}" --duration 20 --settle 5
  cleanup
}

# The workloads of the performance issue, by name.
scenario_small-fanout() { # 1,000 conns, 100 channels of 10, 1,000 msg/s
  start_redis; start_nodes 1
  bench small-fanout --connections 1000 --channels 100 --rate 1000 --duration 10 --settle 3
  cleanup
}

scenario_large-fanout() { # 4,000 conns, 10 channels of 400, 500 msg/s (200k deliveries/s)
  start_redis; start_nodes 1
  bench large-fanout --connections 4000 --channels 10 --rate 500 --duration 10 --settle 3
  cleanup
}

scenario_light-latency() { # small-fanout's load, five runs, for the latency tail
  for run in 1 2 3 4 5; do
    start_redis; start_nodes 1
    bench "light-latency-$run" --connections 1000 --channels 100 --rate 1000 --duration 10 --settle 3
    cleanup
  done
}

for s in ${@:-idle broadcast channels cluster latency}; do
  "scenario_$s"
done
