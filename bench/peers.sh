#!/usr/bin/env bash
# The peer benchmark (issue 6): the same counting-semaphore-with-TTL
# workload, allocate -> release pairs from CLIENTS keep-alive clients, on
# `qm serve` (qm_load: the server in the same process, SQLite
# synchronous=FULL) and on the systems a user might pick instead, each
# configured durable (flushed to disk before it answers) and started on
# loopback in a temporary directory:
#
#   redis       redis-server --appendonly yes --appendfsync always; a Lua
#               script (EVALSHA) + ZREM; 2 round trips per pair
#   postgresql  scripts/pg-test-server.sh (fsync on, synchronous_commit on);
#               UPDATE ... FOR UPDATE SKIP LOCKED + UPDATE; 2 round trips
#   etcd        etcd 3.4 (WAL fsync, its default) through its JSON gateway;
#               lease grant + txn + lease revoke: 3 round trips, one more
#               than the others (a TTL per grant needs a lease of its own)
#
# qm: allocate + release, 2 round trips. See bench/peers/peer.h.
#
# Runs every system once per round, ROUNDS rounds, the order rotated each
# round so the machine's noise hits all alike; each run on a fresh server.
# Prints a markdown table: medians over the rounds, and qm's throughput
# ratio to each peer (the median of the per-round ratios).
#
#   bench/peers.sh                         (make bench-peers)
#   SECONDS_PER_RUN=10 ROUNDS=3 CLIENTS=64 bench/peers.sh
#   PEERS="redis etcd" bench/peers.sh      a subset of the peers
#   KEEP=DIR bench/peers.sh                keep every run's JSON in DIR
#   JOBS=2 bench/peers.sh                  the build's parallelism (nproc)
#
# Installs what is missing (scripts/install-deps.sh, then redis-server,
# etcd-server, libhiredis-dev, jq, curl, pkg-config with apt-get; on a
# machine with systemd Debian's packages also start system-wide redis and
# etcd services on their default ports, which this script neither uses nor
# stops), builds qm_load and qm_peer_load in build-bench (Release), and
# stops every server it started when it exits, also on failure or Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-64}
PEERS=${PEERS:-redis postgresql etcd}
JOBS=${JOBS:-$(nproc)}
KEEP=${KEEP:-}

log() { echo "peers: $*" >&2; }

# --- Packages -------------------------------------------------------------
scripts/install-deps.sh
extra=(redis-server etcd-server libhiredis-dev jq curl pkg-config)
missing=()
for p in "${extra[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
    grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Build ----------------------------------------------------------------
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j "$JOBS" --target qm_load qm_peer_load
QM_LOAD=build-bench/bench/qm_load
PEER_LOAD=build-bench/bench/qm_peer_load

# --- Servers --------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/qm-peers.XXXXXX")
results=$work/results
mkdir -p "$results"
server_pid=""  # the redis or etcd server running now, started here
pg_dir=""      # the PostgreSQL server running now (pg-test-server.sh DIR)

stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
  if [ -n "$pg_dir" ]; then
    scripts/pg-test-server.sh stop "$pg_dir" || true
    pg_dir=""
  fi
}
cleanup() {
  stop_server
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    cp "$results"/*.json "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port on 127.0.0.1 that nothing answers on now, below the kernel's
# ephemeral range (the benchmark's own client connections take ports there,
# and a server could not bind one of those).
free_port() {
  local p low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % (low - 20000)))
    if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# Waits up to 30 s for `check` to pass while the server process lives.
wait_ready() {
  local what=$1 check=$2 log_file=$3
  for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      log "$what exited at start:"
      tail -n 20 "$log_file" >&2
      server_pid=""
      return 1
    fi
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not start within 30 s:"
  tail -n 20 "$log_file" >&2
  return 1
}

# Starts a fresh durable server for peer $1; sets `addr` to its address.
# (Not run in a $(...) subshell: server_pid and pg_dir must stay set.)
start_peer() {
  local peer=$1 dir port port2
  dir=$(mktemp -d "$work/$peer.XXXXXX")
  case "$peer" in
    redis)
      # AOF fsynced before every answer; no RDB snapshots (the AOF is
      # the durable copy, and a forked snapshot mid-run would be noise).
      port=$(free_port)
      redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --appendonly yes --appendfsync always --save '' \
        --logfile "$dir/redis.log" >/dev/null 2>&1 &
      server_pid=$!
      wait_ready redis "redis-cli -h 127.0.0.1 -p $port ping | grep -q PONG" \
        "$dir/redis.log" || return 1
      addr=127.0.0.1:$port
      ;;
    etcd)
      # One member; the WAL fsynced before each answer (etcd's default:
      # no --unsafe-no-fsync).
      port=$(free_port)
      port2=$(free_port)
      etcd --name qm-peer --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$port" \
        --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$port2" \
        --initial-advertise-peer-urls "http://127.0.0.1:$port2" \
        --initial-cluster "qm-peer=http://127.0.0.1:$port2" \
        >"$dir/etcd.log" 2>&1 &
      server_pid=$!
      wait_ready etcd \
        "curl -sf http://127.0.0.1:$port/health | grep -q '\"true\"'" \
        "$dir/etcd.log" || return 1
      addr=127.0.0.1:$port
      ;;
    postgresql)
      # The test suite's throwaway server: PostgreSQL's defaults (fsync
      # on, synchronous_commit on).
      pg_dir=$dir
      addr=$(scripts/pg-test-server.sh start "$dir")
      ;;
    *)
      log "unknown peer $peer"
      return 1
      ;;
  esac
}

# --- Runs -----------------------------------------------------------------
read -r -a peer_list <<<"$PEERS"
systems=(qm "${peer_list[@]}")
n=${#systems[@]}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "$ROUNDS rounds of ${systems[*]}, $CLIENTS clients, ${SECONDS_PER_RUN} s" \
  "each; load average $load_before"
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    system=${systems[$(((i + r - 1) % n))]}
    out=$results/$system.$r.json
    if [ "$system" = qm ]; then
      "$QM_LOAD" --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" >"$out"
    else
      # A port taken between the pick and the bind: pick again.
      for attempt in 1 2 3; do
        if start_peer "$system"; then break; fi
        [ "$attempt" = 3 ] && exit 1
        log "$system: starting again"
      done
      "$PEER_LOAD" --peer "$system" --addr "$addr" --clients "$CLIENTS" \
        --seconds "$SECONDS_PER_RUN" >"$out"
      stop_server
    fi
    log "round $r $system: $(jq -c '{allocations_per_second, errors,
      allocate_ms, release_ms}' "$out") (load $(cut -d' ' -f1-3 /proc/loadavg))"
  done
done

# --- Table ----------------------------------------------------------------
# The median of numbers on stdin (the mean of the middle two for an even
# count).
median() {
  sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) exit 1
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
  }'
}
field() {  # field SYSTEM JQ_PATH: that value of every round, one a line
  for ((r = 1; r <= ROUNDS; r++)); do jq -r "$2" "$results/$1.$r.json"; done
}

echo
echo "| system | durability | round trips per pair | allocations/s | allocate p50 / p99 (ms) | release p50 / p99 (ms) | errors | qm ÷ system |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for system in "${systems[@]}"; do
  if [ "$system" = qm ]; then
    durability="SQLite WAL, synchronous=FULL"
    trips=2
  else
    durability=$(jq -r .durability "$results/$system.1.json")
    trips=$(jq -r .round_trips_per_pair "$results/$system.1.json")
  fi
  rate=$(field "$system" .allocations_per_second | median)
  a50=$(field "$system" .allocate_ms.p50 | median)
  a99=$(field "$system" .allocate_ms.p99 | median)
  r50=$(field "$system" .release_ms.p50 | median)
  r99=$(field "$system" .release_ms.p99 | median)
  errors=$(field "$system" .errors | awk '{s += $1} END {print s}')
  if [ "$system" = qm ]; then
    ratio=""
  else
    ratio=$(for ((r = 1; r <= ROUNDS; r++)); do
      jq -rn --slurpfile q "$results/qm.$r.json" \
        --slurpfile p "$results/$system.$r.json" \
        '$q[0].allocations_per_second / $p[0].allocations_per_second'
    done | median)
  fi
  # Throughput cut to whole allocations/s and the ratio to hundredths,
  # never rounded up.
  awk -v s="$system" -v d="$durability" -v t="$trips" -v x="$rate" \
    -v a50="$a50" -v a99="$a99" -v r50="$r50" -v r99="$r99" -v e="$errors" \
    -v q="$ratio" 'BEGIN {
      rq = q == "" ? "-" : sprintf("%.2f", int(q * 100) / 100)
      printf "| %s | %s | %d | %d | %.2f / %.2f | %.2f / %.2f | %d | %s |\n",
        s, d, t, int(x), a50, a99, r50, r99, e, rq
    }'
done
echo
echo "Medians of $ROUNDS rounds of ${SECONDS_PER_RUN} s, $CLIENTS clients" \
  "(qm ÷ system: the median of the per-round throughput ratios);" \
  "$(date -u +%Y-%m-%d), $(nproc) cores; load average $load_before before" \
  "the first run, $(cut -d' ' -f1-3 /proc/loadavg) after the last (the" \
  "runs' own threads count in it)."
