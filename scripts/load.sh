#!/usr/bin/env bash
# Load tests on loopback: wsloop's echo and broadcast examples against the same servers written with
# tokio-tungstenite and fastwebsockets (peers/src/bin), against themselves with 2 loops, and against
# an earlier revision of themselves, all driven by one load generator (peers/src/bin/loadgen.rs),
# several runs each, interleaved, medians and paired ratios at the end.
#
#   scripts/load.sh                    # every part: about 25 minutes
#   scripts/load.sh --only echo        # some parts: echo, broadcast, chat, loops, topic, idle, deflate,
#                                      # deflate-idle (e.g. --only loops,topic)
#   scripts/load.sh --runs 5 --secs 10 # more and longer runs (defaults: 3 runs of 5 s, after 1 s warm-up)
#   scripts/load.sh --baseline 30a4a68 # echo and broadcast of this tree against those of revision 30a4a68
#                                      # (1 loop each, pinned alike), as server wsloop-30a4a68: about 5 minutes,
#                                      # and about 4 more the first time, to build the baseline
#   scripts/load.sh --only loops       # about 2 minutes; --only topic about 1; --only idle under 1;
#                                      # --only deflate about 5 (with --runs 5); --only deflate-idle about 5
#   scripts/load.sh --baseline REV --only echo [--peers]  # one part; --peers keeps the peer servers in it too
#   scripts/load.sh --baseline REV --metrics   # echo and broadcast of this tree, of this tree with GET /metrics and
#                                      # GET /stats in use (wsloop-metrics: --metrics, /metrics scraped every
#                                      # second and a stats socket open throughout) and of revision REV
#   scripts/load.sh --quick            # CI: a 2 s echo run, a 1 s one with permessage-deflate and a 1 s topic run
#                                      # on 2 loops; non-zero on any error
#   scripts/load.sh --summary FILE     # the tables again, from the RESULT lines a run kept
#
# The parts. echo: 100 x 20 B, 10 x 1 KiB, 10 x 16 KiB and 1000 x 20 B clients each sending and awaiting
# its echo. broadcast: 10, 100 and 1,000 clients, every one sending a message a round to all (N² deliveries).
# chat: the chatroom example, 1,000 users and one sender. loops: broadcast to 100 and 1,000 clients and
# echo 1000 x 20 B, wsloop with one loop (server "wsloop") beside two (--threads 2, "wsloop-2loops").
# topic: 1,000 connections of which 10 subscribe to one topic; one sender's messages reach them by a
# publish ("wsloop-pub"), by the application's sends to each ("wsloop-each", one loop: the example keeps
# its subscribers per loop) and by a publish on 2 loops ("wsloop-2loops-pub"); the other 990 must get
# nothing. idle: server memory per handshaked connection, 10,000 held (1 loop and 2).
#
# permessage-deflate (RFC 7692), the load generator offering it as a browser does and sending the
# chatroom's JSON (a message of its own per sender in broadcast runs, so that a compressor that keeps
# its context never meets a message still in its window). deflate: echo 100 x 200 B and 100 x 1 KiB
# with the extension off ("wsloop") and on with the defaults ("wsloop-deflate": no context takeover
# either side, each message compressed afresh); then broadcast to 1,000 clients, 10 of them sending
# each round, with the defaults (a publish compressed once) beside "wsloop-dedicated-256" and
# "wsloop-dedicated-3" (--deflate-dedicated KIB: every connection keeps its own compressor, so a
# publish is compressed once per receiver) and without the extension. deflate-idle: server memory per
# connection, 10,000 held, right after the handshakes and after each sent and got back one compressed
# 200 B message (a side's own zlib stream is made on first use), without the extension, with the
# defaults and with every --deflate-dedicated preset; --runs runs each, a fresh server for every run.
#
# Placement. In the echo, broadcast, chat and idle parts (and with --baseline) every server runs one
# loop, pinned to one core, and the load generator to another, as in the results kept so far; a
# 2-loop server is never pinned. The loops and topic parts pin nothing, 1 loop and 2 alike (nor the
# generator), so that their 1-loop and 2-loop figures are comparable with each other; on a 2-core
# machine the generator then shares the cores with the server, and the server's CPU per message is
# the figure to compare. Peer servers are single-threaded (tokio's current-thread runtime).
#
# The generator reports its own CPU use and the server's (from /proc/PID/stat, every thread of the
# process): a server near 100% of its core was at its own limit; one with time to spare while the
# generator was near 100% was held back by the generator. The server's CPU time per message, and the
# part of it in the server's own code (user time; the rest is mostly the kernel's TCP work, alike for
# every server), hold either way. Ratios are of the first server of each table over each other one
# (wsloop over a peer, this tree over the baseline, 1 loop over 2, publish over sends one by one),
# the median over paired runs (run i of one came right after run i of the other).
# Raw RESULT lines are kept in reports/load-results-<UTC time>.txt (and the last run's in load-results.txt).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$ROOT/peers
# The summary: medians per configuration and server, and wsloop's figure over each peer's.
summarize() {
echo
echo "== medians of the runs in $1 (ratio = the table's first server / this one (wsloop / peer, this tree / baseline,"
echo "   1 loop / 2 loops, pub / each), the median of the ratios of runs made one after the other: above 1 means the"
echo "   first handled more, or used more CPU per message; range = the lowest and highest of those ratios)"
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
# The lowest and highest of a list, "lo-hi" (in units of div).
function range(list, div,   n, a, i, lo, hi) {
    n = split(list, a, " "); lo = ""; hi = ""
    for (i = 1; i <= n; i++) {
        if (lo == "" || a[i] + 0 < lo) lo = a[i] + 0
        if (hi == "" || a[i] + 0 > hi) hi = a[i] + 0
    }
    return sprintf("%.0f-%.0f", lo / div, hi / div)
}
{
    key = $1 " " $2; server = $3
    if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key; nservers[key] = 0 }
    if (!((key, server) in listed)) { listed[key, server] = 1; servers[key, ++nservers[key]] = server }
    for (i = 5; i <= NF; i++) { split($i, kv, "="); vals[key, server, kv[1]] = vals[key, server, kv[1]] " " kv[2] }
}
END {
    for (k = 1; k <= nkeys; k++) {
        key = order[k]; split(key, parts, " ")
        # permessage-deflate runs say what a message they received weighed on the wire (its payload).
        wh = (key ~ /-json/) ? " wire B/msg" : ""
        if (parts[1] == "echo") {
            rate = "msgs_per_s"; cpu = "server_us_per_msg"; user = "server_user_us_per_msg"
            printf "\n%-28s %-20s %12s %9s %9s %12s %9s %8s %8s %18s %18s%s\n", key, "server", "msgs/s", "p50 us", "p99 us", "srv us/msg", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)", wh
        } else if (parts[1] == "chat" || parts[1] == "topic") {
            rate = "deliveries_per_s"; cpu = "server_us_per_delivery"; user = "server_user_us_per_delivery"
            printf "\n%-28s %-20s %12s %9s %9s %12s %9s %8s %8s %18s %18s%s\n", key, "server", "deliveries/s", "p50 us", "p99 us", "srv us/dlv", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)", wh
        } else if (parts[1] == "broadcast") {
            rate = "deliveries_per_s"; cpu = "server_us_per_delivery"; user = "server_user_us_per_delivery"
            printf "\n%-28s %-20s %12s %9s %9s %12s %9s %8s %8s %18s %18s%s\n", key, "server", "deliveries/s", "round p50", "ms p99", "srv us/dlv", "own code", "srv cpu%", "gen cpu%", "rate ratio (range)", "cpu ratio (range)", wh
        } else {
            printf "\n%-28s %-20s %10s %15s %10s %15s %12s\n", key, "server", "B/conn open", "(range)", "B/conn used", "(range)", "RSS MiB open"
        }
        first = servers[key, 1]
        for (s = 1; s <= nservers[key]; s++) {
            sv = servers[key, s]
            if (parts[1] == "idle") {
                if ((key, sv, "bytes_per_conn_open") in vals)
                    printf "%-28s %-20s %10.0f %15s %10.0f %15s %12.1f\n", "", sv, median(vals[key, sv, "bytes_per_conn_open"]), range(vals[key, sv, "bytes_per_conn_open"], 1), median(vals[key, sv, "bytes_per_conn_used"]), range(vals[key, sv, "bytes_per_conn_used"], 1), median(vals[key, sv, "rss_open"]) / 1048576
                continue
            }
            if (!((key, sv, rate) in vals)) continue
            r = median(vals[key, sv, rate]); c = median(vals[key, sv, cpu])
            p50 = parts[1] != "broadcast" ? median(vals[key, sv, "p50_us"]) : median(vals[key, sv, "round_p50_ms"])
            p99 = parts[1] != "broadcast" ? median(vals[key, sv, "p99_us"]) : median(vals[key, sv, "round_p99_ms"])
            if (sv == first) { rr = "-"; cr = "-" }
            else { rr = paired(vals[key, first, rate], vals[key, sv, rate]); cr = paired(vals[key, first, cpu], vals[key, sv, cpu]) }
            u = ((key, sv, user) in vals) ? sprintf("%.3f", median(vals[key, sv, user])) : "-"
            w = ((key, sv, "wire_bytes_per_msg") in vals) ? sprintf(" %8.1f", median(vals[key, sv, "wire_bytes_per_msg"])) : ""
            printf "%-28s %-20s %12.0f %9.1f %9.1f %12.3f %9s %8.0f %8.0f %18s %18s%s\n", "", sv, r, p50, p99, c, u, median(vals[key, sv, "server_cpu_pct"]), median(vals[key, sv, "client_cpu_pct"]), rr, cr, w
        }
    }
}' "$1"
}

QUICK=0 RUNS=3 SECS=5 WARMUP=1 ONLY= IDLE_CONNS=10000 SUMMARY= BASELINE= WITH_PEERS=0 WITH_METRICS=0
USAGE="usage: scripts/load.sh [--quick] [--runs N] [--secs S] [--only PART[,PART...]] [--baseline REV [--peers] [--metrics]]
                      [--idle-conns N] [--summary FILE]
       PART: echo, broadcast, chat, loops, topic, idle, deflate, deflate-idle"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --baseline) BASELINE=$2; shift ;;
        --peers) WITH_PEERS=1 ;;
        --metrics) WITH_METRICS=1 ;;
        --idle-conns) IDLE_CONNS=$2; shift ;;
        --summary) SUMMARY=$2; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$SUMMARY" ]; then
    summarize "$SUMMARY"
    exit 0
fi
case $RUNS in '' | *[!0-9]* | 0) echo "load.sh: --runs takes a whole number from 1" >&2; exit 2 ;; esac
# What to run: every part, or with --baseline the two it is for (echo and broadcast).
if [ -z "$ONLY" ]; then
    if [ -n "$BASELINE" ]; then ONLY=echo,broadcast; else ONLY=echo,broadcast,chat,loops,topic,idle,deflate,deflate-idle; fi
fi
for part in ${ONLY//,/ }; do
    case $part in
        echo | broadcast | chat | loops | topic | idle | deflate | deflate-idle) ;;
        all) ONLY=echo,broadcast,chat,loops,topic,idle,deflate,deflate-idle ;;
        *) echo "load.sh: unknown part $part" >&2; echo "$USAGE" >&2; exit 2 ;;
    esac
done
if [ -n "$BASELINE" ] && ! base_commit=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE^{commit}"); then
    echo "load.sh: --baseline $BASELINE is not a commit of this repository" >&2
    exit 2
fi
# want PART: whether PART is to run.
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

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
trap 'exit 130' INT TERM

LOADGEN=$PEERS/target/release/loadgen

# With two or more cores, a pinned server is pinned to the last core this script may run on and the
# generator to the first (of e.g. "0-1", or "2,5-7" in a container), so that neither is moved mid-run
# and every server meets the same placement. The kernel's loopback work runs on the core of whoever
# sends, so each side's TCP work stays on its own core. PINNED=0 (the loops and topic parts) pins nothing.
PIN_SERVER=() PIN_LOADGEN=() PINNED=1
ALLOWED=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status 2>/dev/null || true)
FIRST_CORE=${ALLOWED%%[,-]*} LAST_CORE=${ALLOWED##*[,-]}
if [ -n "$ALLOWED" ] && [ "$FIRST_CORE" != "$LAST_CORE" ] && command -v taskset >/dev/null 2>&1 &&
    taskset -c "$FIRST_CORE" true 2>/dev/null && taskset -c "$LAST_CORE" true 2>/dev/null; then
    PIN_SERVER=(taskset -c "$LAST_CORE") PIN_LOADGEN=(taskset -c "$FIRST_CORE")
    echo "== echo, broadcast, chat, idle (and --baseline): 1-loop servers on core $LAST_CORE, load generator on core $FIRST_CORE"
    echo "== loops, topic: nothing pinned, 1 loop and 2 alike, nor the load generator; a 2-loop server is never pinned"
else
    echo "== one core, or no taskset: servers and load generator are not pinned"
fi
WSLOOP_EXAMPLES=$ROOT/target/release/examples

echo "== building (release)"
if [ "$QUICK" = 1 ]; then
    (cd "$ROOT" && nice cargo build --release --quiet --example echo --example broadcast)
    (cd "$PEERS" && nice cargo build --release --quiet --no-default-features --bin loadgen)
else
    (cd "$ROOT" && nice cargo build --release --quiet --example echo --example broadcast --example chatroom)
    (cd "$PEERS" && nice cargo build --release --quiet --bins)
fi

# The baseline: echo and broadcast of revision BASELINE, from `git archive` of it (the tree as committed)
# under target/baseline/<commit>/src, built release in its own target dir beside it (kept for the next run).
BASE_NAME= BASE_EXAMPLES=
if [ -n "$BASELINE" ]; then
    BASE_NAME=wsloop-$(git -C "$ROOT" rev-parse --short=7 "$base_commit")
    base_dir=$ROOT/target/baseline/$base_commit
    if [ ! -f "$base_dir/src.complete" ]; then
        rm -rf "$base_dir/src"
        mkdir -p "$base_dir/src"
        git -C "$ROOT" archive "$base_commit" | tar -x -C "$base_dir/src"
        touch "$base_dir/src.complete"
    fi
    base_examples=(--example echo)
    [ -f "$base_dir/src/examples/broadcast.rs" ] && base_examples+=(--example broadcast)
    echo "== building $BASE_NAME (release, in $base_dir)"
    (cd "$base_dir/src" && CARGO_TARGET_DIR=$base_dir/target nice cargo build --release --quiet "${base_examples[@]}")
    BASE_EXAMPLES=$base_dir/target/release/examples
fi

# start_server NAME MODE: starts that server on a free port; sets PORT and PID. NAME is wsloop (this
# tree, one loop), wsloop-2loops (this tree, --threads 2), wsloop-deflate (this tree, --deflate),
# wsloop-dedicated-KIB (this tree, --deflate-dedicated KIB), the baseline's name, or a peer's.
start_server() {
    local name=$1 mode=$2 cmd pin=()
    local example=$mode
    [ "$mode" = chat ] && example=chatroom
    PORT=$("$LOADGEN" free-port)
    case $name in
        wsloop) cmd=("$WSLOOP_EXAMPLES/$example") ;;
        wsloop-2loops) cmd=("$WSLOOP_EXAMPLES/$example" --threads 2) ;;
        wsloop-metrics) cmd=("$WSLOOP_EXAMPLES/$example" --metrics) ;;
        wsloop-deflate) cmd=("$WSLOOP_EXAMPLES/$example" --deflate) ;;
        wsloop-dedicated-*) cmd=("$WSLOOP_EXAMPLES/$example" --deflate-dedicated "${name#wsloop-dedicated-}") ;;
        "$BASE_NAME") cmd=("$BASE_EXAMPLES/$example") ;;
        *) cmd=("$PEERS/target/release/$name-echo" --port "$PORT" --mode "$mode") ;;
    esac
    case $name in
        wsloop*)
            local users=100000
            [ "$mode" = chat ] && users=2000
            cmd+=(--host 127.0.0.1 --port "$PORT" --max-users "$users") ;;
    esac
    if [ "$PINNED" = 1 ] && [ "$name" != wsloop-2loops ]; then
        pin=(${PIN_SERVER[@]+"${PIN_SERVER[@]}"})
    fi
    # Each server may hold 10,000+ sockets: soft open-files limit up to the hard one (raising the
    # hard limit needs CAP_SYS_RESOURCE; an "unlimited" hard limit is capped by the kernel's nr_open).
    # The examples log at warn so that logging is not measured.
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
        RUST_LOG=warn exec ${pin[@]+"${pin[@]}"} "${cmd[@]}"
    ) >"$WORK/$name-$mode.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    if ! "$LOADGEN" probe --port "$PORT" --timeout 10; then
        echo "load.sh: $name $mode server did not start:" >&2
        cat "$WORK/$name-$mode.log" >&2
        exit 1
    fi
    [ "$name" = wsloop-metrics ] && watch_metrics "$PORT" "$PID"
    return 0
}

# watch_metrics PORT PID: what a server with --metrics serves, in use while it is measured: a stats
# socket open (the figures pushed to it once a second, read and dropped) and GET /metrics every second,
# until the server goes.
watch_metrics() {
    local port=$1 server=$2
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port"
        printf 'GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&3
        exec cat <&3 >/dev/null
    ) &
    PIDS+=("$!")
    (
        while kill -0 "$server" 2>/dev/null; do
            curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/metrics" || true
            sleep 1
        done
    ) &
    PIDS+=("$!")
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# run_loadgen LABEL ARGS...: one loadgen run (pinned when PINNED=1); its output is shown and its RESULT
# line kept. LABEL is "PART CONFIG SERVER": the summary's table key and row.
run_loadgen() {
    local label=$1; shift
    local out pin=()
    [ "$PINNED" = 1 ] && pin=(${PIN_LOADGEN[@]+"${PIN_LOADGEN[@]}"})
    if ! out=$(timeout "$RUN_LIMIT" ${pin[@]+"${pin[@]}"} "$LOADGEN" "$@" 2>&1); then
        echo "$out" >&2
        echo "load.sh: loadgen failed: $label ($*)" >&2
        exit 1
    fi
    echo "$out" | grep -v '^RESULT' | sed "s/^/  [$label] /"
    echo "$label $(echo "$out" | grep '^RESULT')" >>"$WORK/results"
}

# No run may outlast its warm-up and measured seconds by more than 5 minutes (loadgen's own step
# timeouts come first); the idle runs take seconds.
RUN_LIMIT=$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 300 }')
# A topic that 10 of 1,000 connections hold: one sender, at most 16 messages in flight, 32 B each.
TOPIC_ARGS=(--conns 1000 --subscribers 10 --senders 1 --window 16 --size 32)

if [ "$QUICK" = 1 ]; then
    start_server wsloop echo
    run_loadgen "echo 10x1KiB wsloop" echo --port "$PORT" --conns 10 --size 1024 --secs 2 --warmup 0.5 --server-pid "$PID"
    stop_server "$PID"
    # permessage-deflate both ways: every echo inflated by the generator and compared.
    start_server wsloop-deflate echo
    run_loadgen "echo 10x1KiB wsloop-deflate" echo --port "$PORT" --conns 10 --size 1024 --payload json --deflate on \
        --secs 1 --warmup 0.2 --server-pid "$PID"
    stop_server "$PID"
    # A publish across two loops: every subscriber gets every message in order, no one else anything.
    PINNED=0
    start_server wsloop-2loops broadcast
    run_loadgen "topic 10of200 wsloop-2loops-pub" topic --port "$PORT" --conns 200 --subscribers 10 --mode pub \
        --secs 1 --warmup 0.2 --server-pid "$PID"
    stop_server "$PID"
    echo "load.sh --quick: ok"
    exit 0
fi

# The servers of the echo and broadcast parts: wsloop and the peers, or wsloop and the baseline (with
# --peers, the peers too), run i of the baseline right after run i of wsloop.
PEER_SERVERS=(tokio-tungstenite fastwebsockets)
if [ -n "$BASE_NAME" ]; then
    SERVERS=(wsloop "$BASE_NAME")
    [ "$WITH_METRICS" = 1 ] && SERVERS=(wsloop wsloop-metrics "$BASE_NAME")
    [ "$WITH_PEERS" = 1 ] && SERVERS+=("${PEER_SERVERS[@]}")
else
    SERVERS=(wsloop "${PEER_SERVERS[@]}")
fi

# deflate_args SERVER: the load generator's permessage-deflate flag for that server (on for the ones
# started with it; the others are sent the same messages uncompressed).
deflate_args() {
    case $1 in wsloop-deflate | wsloop-dedicated-*) echo "--deflate on" ;; esac
}

# run_part PART CONFIGS SERVERS...: for each CONFIG ("CONNSxSIZE"), starts every server, runs them in
# turn RUNS times (run i of each, one after the other), then stops them. A label's config gets
# CONFIG_SUFFIX appended (the unpinned parts' "-unpinned", so that their tables stay apart); every
# loadgen run gets LOADGEN_ARGS too, and the deflate flag its server needs.
CONFIG_SUFFIX= LOADGEN_ARGS=()
run_part() {
    local part=$1 configs=$2; shift 2
    local config conns size s i
    for config in $configs; do
        conns=${config%x*} size=${config#*x}
        # Every server stays up for the configuration and the runs interleave, so that a slow
        # moment of the machine does not land on one server's runs only.
        local -A port=() pid=()
        for s in "$@"; do start_server "$s" "$part"; port[$s]=$PORT; pid[$s]=$PID; done
        for i in $(seq "$RUNS"); do
            for s in "$@"; do
                # shellcheck disable=SC2046 # deflate_args: none or one flag and its value
                run_loadgen "$part $config$CONFIG_SUFFIX $s" "$part" --port "${port[$s]}" --conns "$conns" \
                    --size "$size" --secs "$SECS" --warmup "$WARMUP" --server-pid "${pid[$s]}" \
                    ${LOADGEN_ARGS[@]+"${LOADGEN_ARGS[@]}"} $(deflate_args "$s")
            done
        done
        for s in "$@"; do stop_server "${pid[$s]}"; done
    done
}

if want echo; then
    echo "== echo: $RUNS runs of ${SECS}s per configuration and server (${SERVERS[*]})"
    run_part echo "100x20 10x1024 10x16384 1000x20" "${SERVERS[@]}"
fi

if want broadcast; then
    servers=("${SERVERS[@]}")
    if [ -n "$BASE_NAME" ] && [ ! -x "$BASE_EXAMPLES/broadcast" ]; then
        echo "== broadcast: $BASE_NAME has no broadcast example; without it"
        servers=(wsloop ${servers[@]:2})
    fi
    echo "== broadcast: every message to every client; $RUNS runs of ${SECS}s (${servers[*]})"
    run_part broadcast "10x20 100x20 1000x20" "${servers[@]}"
fi

if want chat; then
    # The chatroom example itself (JSON, nicknames): no peer has one, so this row is wsloop's alone.
    echo "== chat: the chatroom with 1000 users and one sender; $RUNS runs of ${SECS}s"
    run_part chat "1000x20" wsloop
fi

if want loops; then
    # 1 loop and 2 in turn, nothing pinned. With 2 loops the kernel spreads the connections over both
    # listeners (SO_REUSEPORT) and every broadcast crosses to the other loop through the bus.
    echo "== loops: 1 loop (wsloop) and 2 (wsloop-2loops), nothing pinned; $RUNS runs of ${SECS}s"
    PINNED=0 CONFIG_SUFFIX=-unpinned
    run_part broadcast "100x20 1000x20" wsloop wsloop-2loops
    run_part echo "1000x20" wsloop wsloop-2loops
    PINNED=1 CONFIG_SUFFIX=
fi

if want topic; then
    # One broadcast server with 1 loop (a publish, then the same through sends one by one) and one with 2
    # (a publish only: the example's own subscriber lists, which `each:` uses, are per loop).
    echo "== topic: 10 of 1000 connections subscribed, one sender, at most 16 in flight, nothing pinned; $RUNS runs of ${SECS}s"
    PINNED=0
    start_server wsloop broadcast
    one_port=$PORT one_pid=$PID
    start_server wsloop-2loops broadcast
    two_port=$PORT two_pid=$PID
    label="topic 10of1000x32-unpinned"
    for _ in $(seq "$RUNS"); do
        for how in wsloop-pub wsloop-each wsloop-2loops-pub; do
            if [ "$how" = wsloop-2loops-pub ]; then port=$two_port pid=$two_pid; else port=$one_port pid=$one_pid; fi
            run_loadgen "$label $how" topic --port "$port" "${TOPIC_ARGS[@]}" --mode "${how##*-}" \
                --secs "$SECS" --warmup "$WARMUP" --server-pid "$pid"
        done
    done
    stop_server "$one_pid"
    stop_server "$two_pid"
    PINNED=1
fi

if want idle; then
    idle_servers=(wsloop wsloop-2loops)
    [ -n "$BASE_NAME" ] && idle_servers+=("$BASE_NAME")
    if [ -z "$BASE_NAME" ] || [ "$WITH_PEERS" = 1 ]; then idle_servers+=("${PEER_SERVERS[@]}"); fi
    echo "== idle: server memory for $IDLE_CONNS handshaked connections (a fresh echo server each: ${idle_servers[*]})"
    for s in "${idle_servers[@]}"; do
        start_server "$s" echo
        run_loadgen "idle ${IDLE_CONNS} $s" idle --port "$PORT" --conns "$IDLE_CONNS" --server-pid "$PID"
        stop_server "$PID"
    done
fi

if want deflate; then
    # Echo: the server inflates each message and compresses its echo (each afresh, through the
    # loop's one stream); the generator sends one compressed message over and over.
    echo "== deflate: echo of the chatroom's JSON, permessage-deflate off (wsloop) and on (wsloop-deflate); $RUNS runs of ${SECS}s"
    CONFIG_SUFFIX=-json LOADGEN_ARGS=(--payload json)
    run_part echo "100x200 100x1024" wsloop wsloop-deflate
    # Broadcast: 10 senders a round, each message to all 1,000 clients. The defaults compress a
    # publish once; a dedicated preset compresses it once per receiver, with that receiver's context.
    echo "== deflate: broadcast to 1000 clients, 10 sending each round, 1 KiB of JSON: a publish compressed once"
    echo "   (wsloop-deflate), once per receiver (wsloop-dedicated-256, -3), not at all (wsloop); $RUNS runs of ${SECS}s"
    CONFIG_SUFFIX=-json-10senders LOADGEN_ARGS=(--payload json --senders 10)
    run_part broadcast "1000x1024" wsloop-deflate wsloop-dedicated-256 wsloop-dedicated-3 wsloop
    CONFIG_SUFFIX= LOADGEN_ARGS=()
fi

if want deflate-idle; then
    deflate_servers=(wsloop wsloop-deflate)
    for kib in 3 4 8 16 32 64 128 256; do deflate_servers+=("wsloop-dedicated-$kib"); done
    echo "== deflate-idle: server memory for $IDLE_CONNS connections, handshaked, then after one compressed 200 B"
    echo "   JSON message each way; $RUNS runs, a fresh echo server each (${deflate_servers[*]})"
    for _ in $(seq "$RUNS"); do
        for s in "${deflate_servers[@]}"; do
            start_server "$s" echo
            # shellcheck disable=SC2046 # deflate_args: none or one flag and its value
            run_loadgen "idle ${IDLE_CONNS}-json200 $s" idle --port "$PORT" --conns "$IDLE_CONNS" --server-pid "$PID" \
                --payload json --size 200 $(deflate_args "$s")
            stop_server "$PID"
        done
    done
fi

mkdir -p "$ROOT/reports"
STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/results" "$ROOT/reports/load-results-$STAMP.txt"
cp "$WORK/results" "$ROOT/reports/load-results.txt"
summarize "$ROOT/reports/load-results-$STAMP.txt"
