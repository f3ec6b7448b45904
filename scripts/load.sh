#!/usr/bin/env bash
# Load tests on loopback: wsloop's echo and broadcast examples against the same servers written with
# tokio-tungstenite and fastwebsockets (peers/src/bin), all driven by one load generator
# (peers/src/bin/loadgen.rs), several runs each, medians and wsloop/peer ratios at the end.
#
#   scripts/load.sh                    # echo, broadcast, chat and idle memory: about eleven minutes
#   scripts/load.sh --only echo        # one part: echo, broadcast, chat or idle
#   scripts/load.sh --runs 5 --secs 10 # more and longer runs (defaults: 3 runs of 5 s, after 1 s warm-up)
#   scripts/load.sh --quick            # CI: one 2 s echo run against wsloop only; non-zero on any error
#   scripts/load.sh --summary FILE     # the tables again, from the RESULT lines a run kept
#
# Every server gets a free 127.0.0.1 port and a single thread (tokio's current-thread runtime for the
# peers), pinned to one core, and the load generator to another. The generator reports its own CPU
# use and the server's (from /proc/PID/stat): a server near 100% of its core was at its own limit;
# one with time to spare while the generator was near 100% was held back by the generator. The
# server's CPU time per message, and the part of it in the server's own code (user time; the rest is
# mostly the kernel's TCP work, alike for every server), hold either way.
# Raw RESULT lines are kept in reports/load-results-<UTC time>.txt (and the last run's in load-results.txt).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$ROOT/peers
# The summary: medians per configuration and server, and wsloop's figure over each peer's.
summarize() {
echo
echo "== medians of the runs in $1 (ratio = wsloop / peer, the median of the ratios of runs made one after the other:"
echo "   above 1 means wsloop handled more, or used more CPU per message; range = the lowest and highest of those ratios)"
awk '
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
# The ratios of run i of one server to run i of another (their runs interleave, so run i of each came one after
# the other): "median (lowest-highest)". The pairing takes out what a slow moment of the machine does to both.
function paired(mine, theirs,   n, m, a, b, i, list, lo, hi, q) {
    n = split(mine, a, " "); m = split(theirs, b, " ")
    if (n != m || n == 0) return "-"
    list = ""; lo = ""; hi = ""
    for (i = 1; i <= n; i++) {
        if (b[i] + 0 <= 0) return "-"
        q = a[i] / b[i]; list = list " " q
        if (lo == "" || q < lo) lo = q
        if (hi == "" || q > hi) hi = q
    }
    return sprintf("%.2f (%.2f-%.2f)", median(list), lo, hi)
}
{
    key = $1 " " $2; server = $3
    if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key }
    for (i = 5; i <= NF; i++) { split($i, kv, "="); vals[key, server, kv[1]] = vals[key, server, kv[1]] " " kv[2] }
}
END {
    split("wsloop tokio-tungstenite fastwebsockets", servers, " ")
    for (k = 1; k <= nkeys; k++) {
        key = order[k]; split(key, parts, " ")
        if (parts[1] == "echo") {
            rate = "msgs_per_s"; cpu = "server_us_per_msg"; user = "server_user_us_per_msg"
            printf "\n%-22s %-18s %12s %9s %9s %12s %9s %8s %8s %18s %18s\n", key, "server", "msgs/s", "p50 us", "p99 us", "srv us/msg", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)"
        } else if (parts[1] == "chat") {
            rate = "deliveries_per_s"; cpu = "server_us_per_delivery"; user = "server_user_us_per_delivery"
            printf "\n%-22s %-18s %12s %9s %9s %12s %9s %8s %8s %18s %18s\n", key, "server", "deliveries/s", "p50 us", "p99 us", "srv us/dlv", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)"
        } else if (parts[1] == "broadcast") {
            rate = "deliveries_per_s"; cpu = "server_us_per_delivery"; user = "server_user_us_per_delivery"
            printf "\n%-22s %-18s %12s %9s %9s %12s %9s %8s %8s %18s %18s\n", key, "server", "deliveries/s", "round p50", "ms p99", "srv us/dlv", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)"
        } else {
            printf "\n%-22s %-18s %14s %14s %12s\n", key, "server", "B/conn open", "B/conn used", "RSS MiB open"
        }
        for (s = 1; s <= 3; s++) {
            sv = servers[s]
            if (parts[1] == "idle") {
                if ((key, sv, "bytes_per_conn_open") in vals)
                    printf "%-22s %-18s %14.0f %14.0f %12.1f\n", "", sv, median(vals[key, sv, "bytes_per_conn_open"]), median(vals[key, sv, "bytes_per_conn_used"]), median(vals[key, sv, "rss_open"]) / 1048576
                continue
            }
            if (!((key, sv, rate) in vals)) continue
            r = median(vals[key, sv, rate]); c = median(vals[key, sv, cpu])
            p50 = parts[1] != "broadcast" ? median(vals[key, sv, "p50_us"]) : median(vals[key, sv, "round_p50_ms"])
            p99 = parts[1] != "broadcast" ? median(vals[key, sv, "p99_us"]) : median(vals[key, sv, "round_p99_ms"])
            if (sv == "wsloop") { rr = "-"; cr = "-" }
            else { rr = paired(vals[key, "wsloop", rate], vals[key, sv, rate]); cr = paired(vals[key, "wsloop", cpu], vals[key, sv, cpu]) }
            u = ((key, sv, user) in vals) ? sprintf("%.3f", median(vals[key, sv, user])) : "-"
            printf "%-22s %-18s %12.0f %9.1f %9.1f %12.3f %9s %8.0f %8.0f %18s %18s\n", "", sv, r, p50, p99, c, u, median(vals[key, sv, "server_cpu_pct"]), median(vals[key, sv, "client_cpu_pct"]), rr, cr
        }
    }
}' "$1"
}

QUICK=0 RUNS=3 SECS=5 WARMUP=1 ONLY=all IDLE_CONNS=10000 SUMMARY=
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --idle-conns) IDLE_CONNS=$2; shift ;;
        --summary) SUMMARY=$2; shift ;;
        *) echo "usage: scripts/load.sh [--quick] [--runs N] [--secs S] [--only echo|broadcast|chat|idle] [--idle-conns N] [--summary FILE]" >&2
           exit 2 ;;
    esac
    shift
done
if [ -n "$SUMMARY" ]; then
    summarize "$SUMMARY"
    exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "load.sh: cargo is not installed (this project needs a Rust toolchain)" >&2
    exit 1
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

LOADGEN=$PEERS/target/release/loadgen

# With two or more cores, each server is pinned to the last core this script may run on and the
# generator to the first (of e.g. "0-1", or "2,5-7" in a container), so that neither is moved mid-run
# and every server meets the same placement. The kernel's loopback work runs on the core of whoever
# sends, so each side's TCP work stays on its own core.
PIN_SERVER=() PIN_LOADGEN=()
ALLOWED=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status 2>/dev/null || true)
FIRST_CORE=${ALLOWED%%[,-]*} LAST_CORE=${ALLOWED##*[,-]}
if [ -n "$ALLOWED" ] && [ "$FIRST_CORE" != "$LAST_CORE" ] && command -v taskset >/dev/null 2>&1 &&
    taskset -c "$FIRST_CORE" true 2>/dev/null && taskset -c "$LAST_CORE" true 2>/dev/null; then
    PIN_SERVER=(taskset -c "$LAST_CORE") PIN_LOADGEN=(taskset -c "$FIRST_CORE")
    echo "== server on core $LAST_CORE, load generator on core $FIRST_CORE"
else
    echo "== one core, or no taskset: server and load generator are not pinned"
fi
WSLOOP_ECHO=$ROOT/target/release/examples/echo
WSLOOP_BROADCAST=$ROOT/target/release/examples/broadcast
WSLOOP_CHATROOM=$ROOT/target/release/examples/chatroom

echo "== building (release)"
if [ "$QUICK" = 1 ]; then
    (cd "$ROOT" && nice cargo build --release --quiet --example echo)
    (cd "$PEERS" && nice cargo build --release --quiet --no-default-features --bin loadgen)
else
    examples=(--example echo)
    [ -f "$ROOT/examples/broadcast.rs" ] && examples+=(--example broadcast)
    examples+=(--example chatroom)
    (cd "$ROOT" && nice cargo build --release --quiet "${examples[@]}")
    (cd "$PEERS" && nice cargo build --release --quiet --bins)
fi

# start_server NAME MODE: starts that server on a free port; sets PORT and PID.
start_server() {
    local name=$1 mode=$2 cmd
    PORT=$("$LOADGEN" free-port)
    case $name/$mode in
        wsloop/echo) cmd=("$WSLOOP_ECHO" --host 127.0.0.1 --port "$PORT" --max-users 100000) ;;
        wsloop/broadcast) cmd=("$WSLOOP_BROADCAST" --host 127.0.0.1 --port "$PORT" --max-users 100000) ;;
        wsloop/chat) cmd=("$WSLOOP_CHATROOM" --host 127.0.0.1 --port "$PORT" --max-users 2000) ;;
        *) cmd=("$PEERS/target/release/$name-echo" --port "$PORT" --mode "$mode") ;;
    esac
    # Each server may hold 10,000+ sockets: soft open-files limit up to the hard one (raising the
    # hard limit needs CAP_SYS_RESOURCE; an "unlimited" hard limit is capped by the kernel's nr_open).
    # The examples log at warn so that logging is not measured.
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
        RUST_LOG=warn exec ${PIN_SERVER[@]+"${PIN_SERVER[@]}"} "${cmd[@]}"
    ) >"$WORK/$name-$mode.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    if ! "$LOADGEN" probe --port "$PORT" --timeout 10; then
        echo "load.sh: $name $mode server did not start:" >&2
        cat "$WORK/$name-$mode.log" >&2
        exit 1
    fi
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# run_loadgen LABEL ARGS...: one loadgen run; its output is shown and its RESULT line kept.
run_loadgen() {
    local label=$1; shift
    local out
    if ! out=$(${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"} "$LOADGEN" "$@" 2>&1); then
        echo "$out" >&2
        echo "load.sh: loadgen failed: $label ($*)" >&2
        exit 1
    fi
    echo "$out" | grep -v '^RESULT' | sed "s/^/  [$label] /"
    echo "$label $(echo "$out" | grep '^RESULT')" >>"$WORK/results"
}

if [ "$QUICK" = 1 ]; then
    start_server wsloop echo
    run_loadgen "echo 10x1KiB wsloop" echo --port "$PORT" --conns 10 --size 1024 --secs 2 --warmup 0.5 --server-pid "$PID"
    stop_server "$PID"
    echo "load.sh --quick: ok"
    exit 0
fi

SERVERS=(wsloop tokio-tungstenite fastwebsockets)

if [ "$ONLY" = all ] || [ "$ONLY" = echo ]; then
    echo "== echo: $RUNS runs of ${SECS}s per configuration and server"
    for config in 100x20 10x1024 10x16384 1000x20; do
        conns=${config%x*} size=${config#*x}
        # All three servers stay up for the configuration and the runs interleave, so that a slow
        # moment of the machine does not land on one server's runs only.
        declare -A port pid
        for s in "${SERVERS[@]}"; do start_server "$s" echo; port[$s]=$PORT; pid[$s]=$PID; done
        for _ in $(seq "$RUNS"); do
            for s in "${SERVERS[@]}"; do
                run_loadgen "echo $config $s" echo --port "${port[$s]}" --conns "$conns" --size "$size" \
                    --secs "$SECS" --warmup "$WARMUP" --server-pid "${pid[$s]}"
            done
        done
        for s in "${SERVERS[@]}"; do stop_server "${pid[$s]}"; done
        unset port pid
    done
fi

if [ "$ONLY" = all ] || [ "$ONLY" = broadcast ]; then
    if [ -x "$WSLOOP_BROADCAST" ]; then
        echo "== broadcast: every message to every client; $RUNS runs of ${SECS}s"
        for n in 10 100 1000; do
            declare -A port pid
            for s in "${SERVERS[@]}"; do start_server "$s" broadcast; port[$s]=$PORT; pid[$s]=$PID; done
            for _ in $(seq "$RUNS"); do
                for s in "${SERVERS[@]}"; do
                    run_loadgen "broadcast ${n}x20 $s" broadcast --port "${port[$s]}" --conns "$n" --size 20 \
                        --secs "$SECS" --warmup "$WARMUP" --server-pid "${pid[$s]}"
                done
            done
            for s in "${SERVERS[@]}"; do stop_server "${pid[$s]}"; done
            unset port pid
        done
    else
        echo "== broadcast: skipped, wsloop has no examples/broadcast.rs yet"
    fi
fi

if [ "$ONLY" = all ] || [ "$ONLY" = chat ]; then
    # The chatroom example itself (JSON, nicknames): no peer has one, so this row is wsloop's alone.
    echo "== chat: the chatroom with 1000 users and one sender; $RUNS runs of ${SECS}s"
    start_server wsloop chat
    for _ in $(seq "$RUNS"); do
        run_loadgen "chat 1000x20 wsloop" chat --port "$PORT" --conns 1000 --size 20 \
            --secs "$SECS" --warmup "$WARMUP" --server-pid "$PID"
    done
    stop_server "$PID"
fi

if [ "$ONLY" = all ] || [ "$ONLY" = idle ]; then
    echo "== idle: server memory for $IDLE_CONNS handshaked connections (fresh echo server each)"
    for s in "${SERVERS[@]}"; do
        start_server "$s" echo
        run_loadgen "idle ${IDLE_CONNS} $s" idle --port "$PORT" --conns "$IDLE_CONNS" --server-pid "$PID"
        stop_server "$PID"
    done
fi

mkdir -p "$ROOT/reports"
STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/results" "$ROOT/reports/load-results-$STAMP.txt"
cp "$WORK/results" "$ROOT/reports/load-results.txt"
summarize "$ROOT/reports/load-results-$STAMP.txt"

