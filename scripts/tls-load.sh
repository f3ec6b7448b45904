#!/usr/bin/env bash
# wss:// against ws:// on loopback, side by side in the same runs: wsloop's echo example (one loop) and the
# tokio-tungstenite peer (peers/src/bin/tokio-tungstenite-echo.rs, current-thread runtime), each plain and with TLS
# (a P-256 certificate made for the run with openssl), driven by the load generator (peers/src/bin/loadgen.rs,
# `--tls-ca` for the TLS ones).
#
#   scripts/tls-load.sh [--runs 5] [--secs 5] [--warmup 1] [--idle-runs 3] [--idle-conns 10000]
#                       [--only echo,handshakes,idle]
#
# echo: 100 x 20 B and 10 x 16 KiB, every client sending and awaiting its echo; the four servers stay up for a
# configuration and run i of each comes right after run i of the others (wsloop, wsloop-tls, tokio-tungstenite,
# tokio-tungstenite-tls). handshakes: new connections, 16 in flight, each connect, TLS handshake (full: no
# resumption), upgrade, one 20 B echo and close, same servers, same alternation. idle: a fresh server for each run,
# 10,000 connections held, its RSS per connection right after the handshakes and after one echo on each; wsloop
# plain and TLS alternating, then the peer plain and TLS.
#
# Placement as in scripts/load.sh: every server pinned to the last core, the load generator to the first. Before
# each run the machine's load average is printed: other work on the machine shows there. The output is the runs'
# lines as they come, each RESULT line prefixed with "PART CONFIG SERVER", for scripts/tls-summary.py.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5 SECS=5 WARMUP=1 IDLE_RUNS=3 IDLE_CONNS=10000 ONLY=echo,handshakes,idle
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --idle-runs) IDLE_RUNS=$2; shift ;;
        --idle-conns) IDLE_CONNS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        *) echo "tls-load.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ECHO=$CARGO_TARGET_DIR/release/examples/echo
PEER=$ROOT/peers/target/release/tokio-tungstenite-echo
LOADGEN=$ROOT/peers/target/release/loadgen
for bin in "$ECHO" "$PEER" "$LOADGEN"; do
    [ -x "$bin" ] || { echo "tls-load.sh: $bin missing (cargo build --release --example echo; cd peers && cargo build --release)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/tls-load.XXXXXX)
CERT=$WORK/cert.pem KEY=$WORK/key.pem
# An end-entity certificate (CA:FALSE: webpki refuses a CA certificate as a server's) for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$KEY" -out "$CERT" 2>/dev/null

CORES=$(nproc)
PIN_SERVER=(taskset -c "$((CORES - 1))") PIN_LOADGEN=(taskset -c 0)
PIDS=()
cleanup() {
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_server NAME: starts it on a free port; sets PORT and PID (the server process itself, for /proc).
start_server() {
    local name=$1 cmd
    PORT=$("$LOADGEN" free-port)
    case $name in
        wsloop) cmd=("$ECHO" --port "$PORT" --max-users 20000) ;;
        wsloop-tls) cmd=("$ECHO" --port "$PORT" --max-users 20000 --tls-cert "$CERT" --tls-key "$KEY") ;;
        tokio-tungstenite) cmd=("$PEER" --port "$PORT") ;;
        tokio-tungstenite-tls) cmd=("$PEER" --port "$PORT" --tls-cert "$CERT" --tls-key "$KEY") ;;
    esac
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        RUST_LOG=warn exec "${PIN_SERVER[@]}" "${cmd[@]}"
    ) >"$WORK/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    if ! "$LOADGEN" probe --port "$PORT" --timeout 10; then
        echo "tls-load.sh: $name did not start:" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    echo "# $name: $(head -1 "$WORK/$name.log") (pid $PID): ${cmd[*]}"
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# tls_args SERVER: the generator's --tls-ca for a TLS server.
tls_args() {
    case $1 in *-tls) echo "--tls-ca $CERT" ;; esac
}

# run_loadgen LABEL ARGS...: one run, bounded in time; its lines shown, its RESULT line prefixed with LABEL.
run_loadgen() {
    local label=$1; shift
    local out
    echo "# $(date -u +%H:%M:%S) loadavg $(cut -d' ' -f1-3 /proc/loadavg): loadgen $*"
    if ! out=$(ulimit -n "$(ulimit -Hn)"; timeout "$LIMIT" "${PIN_LOADGEN[@]}" "$LOADGEN" "$@" 2>&1); then
        echo "$out" >&2
        echo "tls-load.sh: loadgen failed: $label ($*)" >&2
        exit 1
    fi
    echo "$out" | grep -v '^RESULT' | sed "s/^/  [$label] /"
    echo "$label $(echo "$out" | grep '^RESULT')"
}

LIMIT=$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 120 }')
SERVERS=(wsloop wsloop-tls tokio-tungstenite tokio-tungstenite-tls)

# The four servers up, the runs of PART with ARGS alternating between them, RUNS times.
run_part() {
    local part=$1 config=$2; shift 2
    local s i
    local -A port=() pid=()
    for s in "${SERVERS[@]}"; do start_server "$s"; port[$s]=$PORT; pid[$s]=$PID; done
    for i in $(seq "$RUNS"); do
        for s in "${SERVERS[@]}"; do
            # shellcheck disable=SC2046 # tls_args: none or one flag and its value
            run_loadgen "$part $config $s" "$part" --port "${port[$s]}" --secs "$SECS" --warmup "$WARMUP" \
                --server-pid "${pid[$s]}" "$@" $(tls_args "$s")
        done
    done
    for s in "${SERVERS[@]}"; do stop_server "${pid[$s]}"; done
}

echo "# tls-load.sh --runs $RUNS --secs $SECS --warmup $WARMUP --idle-runs $IDLE_RUNS --idle-conns $IDLE_CONNS --only $ONLY"
echo "# $(date -u) on $(nproc) cores; $(uname -r); wsloop $(git -C "$ROOT" rev-parse --short HEAD) + uncommitted changes"
echo "# certificate: $(openssl x509 -in "$CERT" -noout -text | grep -m1 'Public Key Algorithm' | xargs), $(openssl x509 -in "$CERT" -noout -text | grep -m1 'NIST CURVE' | xargs)"

if want echo; then
    run_part echo 100x20 --conns 100 --size 20
    run_part echo 10x16384 --conns 10 --size 16384
fi
if want handshakes; then
    run_part handshakes 16par --conns-parallel 16 --size 20
fi
if want idle; then
    for pair in "wsloop wsloop-tls" "tokio-tungstenite tokio-tungstenite-tls"; do
        for i in $(seq "$IDLE_RUNS"); do
            for s in $pair; do
                start_server "$s"
                # shellcheck disable=SC2046
                run_loadgen "idle $IDLE_CONNS $s" idle --port "$PORT" --conns "$IDLE_CONNS" --server-pid "$PID" \
                    $(tls_args "$s")
                stop_server "$PID"
            done
        done
    done
fi
echo "# done $(date -u)"
