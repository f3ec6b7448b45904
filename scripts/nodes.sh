#!/usr/bin/env bash
# The chatroom on several nodes joined through Redis (cargo feature `redis`), on this machine: 1,000 users
# spread over 1, 2 and 3 nodes, beside one node without Redis; deliveries/s and delivery latency p50/p99 with
# one sender and with all users sending; the nodes' CPU and redis-server's CPU per message; Redis memory for
# a stream of 100,000 chat messages under the default trim.
#
#   scripts/nodes.sh                    # 3 runs of each setup and load: about 3 minutes after the build
#   scripts/nodes.sh --runs 5 --secs 5  # more and longer runs (defaults: 3 runs of 3 s, after 1 s of warm-up)
#   scripts/nodes.sh --out FILE         # also keeps everything printed in FILE
#   scripts/nodes.sh --quick            # CI: one 1 s run, 200 users on 2 nodes, all sending; checks that every
#                                       # user sees every message in one order; non-zero on any error (< 30 s)
#   scripts/nodes.sh --summary FILE     # the table again, from the RESULT lines of a kept output
#
# The setups, each started once and kept up for all its runs (their runs interleave, run i of each one after
# the other, so that a slow moment of the machine does not land on one setup only):
#   1 node          the chatroom without --redis: every broadcast stays in the process
#   1 node + Redis  the chatroom with --redis and one node: every event goes to Redis (XADD) and comes back (XREAD)
#   2 nodes, 3 nodes  as many chatrooms on one Redis; user i connects to node i mod k
# Each setup with Redis has a redis-server of its own (loopback, no persistence), so that the idle nodes of
# the other setups cost nothing meanwhile. Every node runs one loop (--threads 1).
#
# The loads (peers/src/bin/loadgen.rs, `chat`, one thread): "one sender": user 0 (on the first node) sends
# numbered messages, at most 4 not yet delivered to every user; "all": the 1,000 users send in turn, at most
# 16 messages in flight in all. Every user must receive every message, byte for byte, and every user the same
# sequence (each sender's messages in the order sent); anything else fails the run. Latency is per delivery,
# send to receipt. CPU from /proc/PID/stat (10 ms ticks, so a few percent at these lengths): the nodes' sum
# (all threads: the loop and the Redis helper threads), per delivery and per chat message, and redis-server's
# per chat message (XADD, and the XREADs of every node; heartbeats and presence writes included).
#
# Memory: a fresh redis-server and one node; 120,000 chat messages of 20 B text (2 users; the trim, MAXLEN ~
# 100000, is active from the 100,000th on); then XLEN, MEMORY USAGE of the stream (SAMPLES 0: every entry) and
# INFO memory's used_memory (before and after). Redis's CPU per message at that rate comes with it.
#
# Placement: nothing is pinned. The machine has 2 cores, shared by the nodes, redis-server and the load
# generator (and whatever else runs): with more processes than cores, 2 and 3 nodes compete with Redis and the
# generator for the same 2 cores, so these figures show what Redis costs and how the work is shared, not how
# nodes on separate machines would scale.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$ROOT/peers
LOADGEN=$PEERS/target/release/loadgen
CHATROOM=$ROOT/target/release/examples/chatroom

# summarize FILE [WHAT]: the table from the RESULT and MEMORY lines in FILE (WHAT names them; default FILE).
summarize() {
    echo
    echo "== medians of the runs ${2:-in $1} (deliveries/s over the measured window; latency of each delivery, send to"
    echo "   receipt; CPU in % of one core and per unit; the nodes' CPU is their sum)"
    grep '^RESULT ' "$1" | awk '
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function val(key, name) { return median(vals[key, name]) }
{
    delete kv
    for (i = 2; i <= NF; i++) { split($i, pair, "="); kv[pair[1]] = pair[2] }
    if (kv["mode"] != "chat") next
    key = kv["setup"] " " kv["load"]
    if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key; runs[key] = 0 }
    runs[key]++
    for (name in kv) vals[key, name] = vals[key, name] " " kv[name]
}
END {
    printf "\n%-16s %-16s %4s %13s %9s %9s %10s %11s %11s %9s %12s\n", "setup", "load", "runs", "deliveries/s", "p50 ms", "p99 ms", "nodes cpu%", "node us/dlv", "node us/msg", "redis%", "redis us/msg"
    for (k = 1; k <= nkeys; k++) {
        key = order[k]; split(key, parts, " ")
        redis_pct = val(key, "redis_cpu_pct"); redis_msg = val(key, "redis_us_per_msg")
        load = parts[2] == "one" ? "one sender (4)" : "all (16)"
        if (parts[2] == "fill") load = "fill (64)"
        printf "%-16s %-16s %4d %13.0f %9.2f %9.2f %10.0f %11.3f %11.1f %9s %12s\n", parts[1], load, runs[key],
            val(key, "deliveries_per_s"), val(key, "p50_us") / 1000, val(key, "p99_us") / 1000,
            val(key, "server_cpu_pct"), val(key, "server_us_per_delivery"), val(key, "server_us_per_msg"),
            redis_pct == "" ? "-" : sprintf("%.1f", redis_pct), redis_msg == "" ? "-" : sprintf("%.1f", redis_msg)
    }
}'
    grep '^MEMORY ' "$1" | tail -1 | awk '{
        for (i = 2; i <= NF; i++) { split($i, pair, "="); kv[pair[1]] = pair[2] }
        printf "\nRedis memory, a stream of %d chat messages (%d sent, MAXLEN ~ %d): MEMORY USAGE of the stream %.1f MiB (%.0f B per entry);\n", kv["xlen"], kv["sent"], kv["maxlen"], kv["stream_bytes"] / 1048576, kv["stream_bytes"] / kv["xlen"]
        printf "  used_memory %.1f MiB before, %.1f MiB after (+%.1f MiB); used_memory_rss %.1f MiB after; one event is %d B of JSON\n", kv["used_before"] / 1048576, kv["used_after"] / 1048576, (kv["used_after"] - kv["used_before"]) / 1048576, kv["rss_after"] / 1048576, kv["event_bytes"]
    }'
}

QUICK=0 RUNS=3 SECS=3 WARMUP=1 USERS=1000 OUT= SUMMARY=
USAGE="usage: scripts/nodes.sh [--quick] [--runs N] [--secs S] [--users N] [--out FILE] [--summary FILE]"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=${2:-}; shift ;;
        --secs) SECS=${2:-}; shift ;;
        --users) USERS=${2:-}; shift ;;
        --out) OUT=${2:-}; shift ;;
        --summary) SUMMARY=${2:-}; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$SUMMARY" ]; then
    summarize "$SUMMARY"
    exit 0
fi
case $RUNS in '' | *[!0-9]* | 0) echo "nodes.sh: --runs takes a whole number from 1" >&2; exit 2 ;; esac
case $USERS in '' | *[!0-9]* | 0) echo "nodes.sh: --users takes a whole number from 1" >&2; exit 2 ;; esac
case $SECS in '' | *[!0-9.]*) echo "nodes.sh: --secs takes a number of seconds" >&2; exit 2 ;; esac
for tool in cargo redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "nodes.sh: $tool is not installed (redis-server and redis-cli: apt-get install redis-server)" >&2
        exit 1
    fi
done
if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    exec > >(tee "$OUT") 2>&1
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== nodes.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, nothing pinned; $(redis-server --version | cut -d' ' -f1-3)"
echo "== load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 minutes; other work on the machine shows here)"
echo "== building (release): the chatroom with --features redis, the load generator"
(cd "$ROOT" && nice cargo build --release --quiet --example chatroom --features redis)
(cd "$PEERS" && nice cargo build --release --quiet --no-default-features --bin loadgen)

# start_redis NAME: a redis-server of its own on a free loopback port, no persistence; sets RPORT and RPID.
start_redis() {
    RPORT=$("$LOADGEN" free-port)
    redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --protected-mode yes \
        >"$WORK/redis-$1.log" 2>&1 &
    RPID=$!
    PIDS+=("$RPID")
    local i
    for i in $(seq 100); do
        if [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = PONG ]; then return 0; fi
        if ! kill -0 "$RPID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "nodes.sh: redis-server $1 did not start:" >&2
    cat "$WORK/redis-$1.log" >&2
    exit 1
}

# start_node NAME [REDIS_PORT]: a chatroom on a free port (with --redis when REDIS_PORT is given); sets PORT
# and PID once it has said it is up (after joining Redis) and accepts connections.
start_node() {
    local name=$1 redis_port=${2:-} cmd i
    PORT=$("$LOADGEN" free-port)
    cmd=("$CHATROOM" --host 127.0.0.1 --port "$PORT" --max-users $((USERS + 1000)))
    [ -n "$redis_port" ] && cmd+=(--redis "redis://127.0.0.1:$redis_port")
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        RUST_LOG=warn exec "${cmd[@]}"
    ) >"$WORK/node-$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for i in $(seq 100); do
        if grep -q '^chatroom on ' "$WORK/node-$name.log" 2>/dev/null; then break; fi
        if ! kill -0 "$PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if ! grep -q '^chatroom on ' "$WORK/node-$name.log" || ! "$LOADGEN" probe --port "$PORT" --timeout 5 >/dev/null; then
        echo "nodes.sh: node $name did not start:" >&2
        cat "$WORK/node-$name.log" >&2
        exit 1
    fi
}

# start_setup NAME NODES [redis]: NODES chatrooms, on a redis-server of their own with "redis"; sets
# SETUP_PORTS[NAME], SETUP_PIDS[NAME] (comma-separated) and SETUP_REDIS[NAME] (the redis-server's pid, or empty).
declare -A SETUP_PORTS=() SETUP_PIDS=() SETUP_REDIS=()
start_setup() {
    local name=$1 nodes=$2 with_redis=${3:-} ports="" pids="" k rport=""
    SETUP_REDIS[$name]=""
    if [ "$with_redis" = redis ]; then
        start_redis "$name"
        rport=$RPORT
        SETUP_REDIS[$name]=$RPID
    fi
    for k in $(seq "$nodes"); do
        start_node "$name-$k" "$rport"
        ports+=${ports:+,}$PORT
        pids+=${pids:+,}$PID
    done
    SETUP_PORTS[$name]=$ports
    SETUP_PIDS[$name]=$pids
    echo "   $name: ports $ports${rport:+, redis-server on $rport}"
}

# run_chat SETUP LOAD ARGS...: one loadgen chat run against that setup; its output is shown with its
# RESULT line, to which setup= and load= are added. Fails the script on any error.
run_chat() {
    local setup=$1 load=$2 out
    shift 2
    local redis_args=()
    [ -n "${SETUP_REDIS[$setup]}" ] && redis_args=(--redis-pid "${SETUP_REDIS[$setup]}")
    if ! out=$(timeout 120 "$LOADGEN" chat --ports "${SETUP_PORTS[$setup]}" --server-pids "${SETUP_PIDS[$setup]}" \
        ${redis_args[@]+"${redis_args[@]}"} "$@" 2>&1); then
        echo "$out" >&2
        echo "nodes.sh: loadgen chat failed: $setup, $load ($*)" >&2
        exit 1
    fi
    echo "$out" | grep -v '^RESULT' | sed "s/^/  [$setup $load] /"
    echo "$out" | grep '^RESULT' | sed "s/^RESULT /RESULT setup=$setup load=$load /" | tee -a "$WORK/results"
}

if [ "$QUICK" = 1 ]; then
    echo "== quick: 200 users on 2 nodes, all sending, 1 s"
    start_setup 2-nodes 2 redis
    run_chat 2-nodes all --conns 200 --senders all --window 16 --secs 1 --warmup 0.3
    echo "nodes.sh --quick: ok"
    exit 0
fi

echo "== starting the setups ($USERS users each run; every node --max-users $((USERS + 1000)))"
SETUPS=(1-node 1-node+redis 2-nodes 3-nodes)
start_setup 1-node 1
start_setup 1-node+redis 1 redis
start_setup 2-nodes 2 redis
start_setup 3-nodes 3 redis

echo "== $RUNS runs of ${SECS} s (after ${WARMUP} s of warm-up) per setup and load, interleaved"
for i in $(seq "$RUNS"); do
    for setup in "${SETUPS[@]}"; do
        run_chat "$setup" one --conns "$USERS" --senders 1 --window 4 --secs "$SECS" --warmup "$WARMUP"
        run_chat "$setup" all --conns "$USERS" --senders all --window 16 --secs "$SECS" --warmup "$WARMUP"
    done
done
for setup in "${SETUPS[@]}"; do
    for pid in ${SETUP_PIDS[$setup]//,/ } ${SETUP_REDIS[$setup]}; do kill "$pid" 2>/dev/null || true; done
done

echo "== memory: a fresh redis-server and one node, 120,000 chat messages from 2 users (64 in flight)"
start_setup memory 1 redis
mem_port=$RPORT
redis_used() { redis-cli -p "$mem_port" info memory | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
used_before=$(redis_used used_memory)
run_chat memory fill --conns 2 --senders 1 --window 64 --messages 120000 --secs 60 --warmup 0
KEY='wsloop:{*}:broadcast'
xlen=$(redis-cli -p "$mem_port" xlen "$KEY")
stream_bytes=$(redis-cli -p "$mem_port" memory usage "$KEY" samples 0)
used_after=$(redis_used used_memory)
rss_after=$(redis_used used_memory_rss)
event_bytes=$(redis-cli -p "$mem_port" --raw xrevrange "$KEY" + - count 1 | awk 'prev == "d" { print length($0) } { prev = $0 }')
echo "  [memory] XLEN $xlen, MEMORY USAGE $stream_bytes B, used_memory $used_before B before and $used_after B after, used_memory_rss $rss_after B"
echo "MEMORY sent=120000 maxlen=100000 xlen=$xlen stream_bytes=$stream_bytes used_before=$used_before used_after=$used_after rss_after=$rss_after event_bytes=${event_bytes:-0}" |
    tee -a "$WORK/results"

echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 minutes; other work on the machine shows here)"
summarize "$WORK/results" above
