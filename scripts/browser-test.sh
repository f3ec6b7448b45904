#!/usr/bin/env bash
# End-to-end test of the chat page (examples/chatroom.html), the live stats page (src/metrics/stats.html) and the
# protocol inspector (examples/inspect.html) in a real headless Chromium.
#
#   scripts/browser-test.sh           # all scenarios: one chatroom (then one over https), the stats page and the
#                                     # protocol inspector, then two nodes on Redis
#   scripts/browser-test.sh --nodes   # the two nodes only
#
# 1. installs what it needs if it is missing: Debian's chromium and fonts (emoji, CJK), Node.js,
#    redis-server, openssl, and playwright-core from npm into tests/browser/node_modules (no browser download);
# 2. builds the chatroom example (into $CARGO_TARGET_DIR if that is set), and makes a throwaway self-signed
#    certificate for 127.0.0.1 with openssl (target/browser-tls/, valid two days);
# 3. picks two free loopback ports and runs tests/browser/chat.test.mjs, which starts, stops and
#    restarts the chatroom itself and drives two pages in Chromium; its last step starts a second chatroom
#    with --tls-cert and --tls-key on the second port and has two pages on https:// chat over wss://;
# 4. picks two more free loopback ports and runs, with the same chatroom, tests/browser/stats.test.mjs (the live
#    stats page, /stats, and /metrics) and tests/browser/inspect.test.mjs (the protocol inspector, /inspect); each
#    starts and stops its own chatroom;
# 5. builds the chatroom with --features redis, picks three free loopback ports and runs
#    tests/browser/nodes.test.mjs, which starts a redis-server and two nodes on it, and drives page A
#    on node 1, page B on node 2 and, later, page C on node 2 (the history).
# Screenshots and the servers' logs go to artifacts/browser/ (git-ignored). Exits non-zero on any failure.
#
# CHAT_SERVER="cmd args" tests another server instead in step 3 ("--port N" is appended, and for the https
# step "--tls-cert FILE --tls-key FILE" too); the build is skipped. CHAT_TLS=0 skips the https step. CHAT_PAGES=0
# skips step 4 (a server other than the chatroom has neither page).
# NODES_SERVER does the same in step 5 ("--port N --redis URL" is appended).
set -euo pipefail

ONLY_NODES=0
case "${1:-}" in
  "") ;;
  --nodes) ONLY_NODES=1 ;;
  *) echo "usage: scripts/browser-test.sh [--nodes]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
ARTIFACTS="$ROOT/artifacts/browser"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# --- 1. tools --------------------------------------------------------------------------------
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
for pkg in fonts-liberation fonts-noto-color-emoji fonts-wqy-microhei; do
  is_installed "$pkg" || need+=("$pkg")
done
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "browser-test: installing ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

# playwright-core only drives the browser; it downloads nothing when installed.
(
  cd tests/browser
  if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
)

# --- 2. the chatroom -------------------------------------------------------------------------
free_port() {
  node -e '
    const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png "$ARTIFACTS/server.pid" "$ARTIFACTS/nodes.pids"
CHAT_PORT="" CHAT_TLS_PORT="" STATS_PORT="" INSPECT_PORT="" NODE_PORTS=""

# The tests stop their own servers; this is the safety net if a test itself is killed. Only processes
# whose command line names one of this run's ports are stopped.
cleanup() {
  local pid port
  for pid in $(cat "$ARTIFACTS/server.pid" "$ARTIFACTS/nodes.pids" 2>/dev/null || true); do
    [ -r "/proc/$pid/cmdline" ] || continue
    for port in $CHAT_PORT $CHAT_TLS_PORT $STATS_PORT $INSPECT_PORT ${NODE_PORTS//,/ } ${REDIS_PORT:-}; do
      # redis-server shows itself as "redis-server 127.0.0.1:PORT" once started.
      if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qE -- "(--port |127\.0\.0\.1:)$port( |\$)"; then
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
    done
  done
}
trap cleanup EXIT

if [ "$ONLY_NODES" = 0 ]; then
  if [ -z "${CHAT_SERVER:-}" ]; then
    nice cargo build --example chatroom
    CHAT_SERVER="${CARGO_TARGET_DIR:-target}/debug/examples/chatroom"
  fi

  # The https step's certificate, made for this run only (the pages accept it as it is).
  CHAT_TLS_CERT="" CHAT_TLS_KEY=""
  if [ "${CHAT_TLS:-1}" != 0 ]; then
    tls_dir="${CARGO_TARGET_DIR:-$ROOT/target}/browser-tls"
    mkdir -p "$tls_dir"
    CHAT_TLS_CERT="$tls_dir/cert.pem" CHAT_TLS_KEY="$tls_dir/key.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
      -keyout "$CHAT_TLS_KEY" -out "$CHAT_TLS_CERT" > "$tls_dir/openssl.log" 2>&1 \
      || { cat "$tls_dir/openssl.log" >&2; echo "browser-test: openssl could not make a certificate" >&2; exit 1; }
  fi

  # --- 3. the test ---------------------------------------------------------------------------
  CHAT_PORT=$(free_port)
  if [ -n "$CHAT_TLS_CERT" ]; then
    # a second port, different from the first (two picks in a row may, rarely, be the same one)
    for _ in $(seq 20); do
      CHAT_TLS_PORT=$(free_port)
      [ "$CHAT_TLS_PORT" = "$CHAT_PORT" ] || break
    done
    if [ "$CHAT_TLS_PORT" = "$CHAT_PORT" ]; then
      echo "browser-test: could not pick two free ports" >&2
      exit 1
    fi
    echo "browser-test: server '$CHAT_SERVER' on 127.0.0.1:$CHAT_PORT, and over TLS on 127.0.0.1:$CHAT_TLS_PORT," \
      "artifacts in $ARTIFACTS"
  else
    echo "browser-test: server '$CHAT_SERVER' on 127.0.0.1:$CHAT_PORT (no https step), artifacts in $ARTIFACTS"
  fi
  CHAT_PORT=$CHAT_PORT CHAT_SERVER=$CHAT_SERVER ARTIFACTS=$ARTIFACTS \
    CHAT_TLS_PORT=$CHAT_TLS_PORT CHAT_TLS_CERT=$CHAT_TLS_CERT CHAT_TLS_KEY=$CHAT_TLS_KEY \
    timeout -k 10 300 node tests/browser/chat.test.mjs

  # --- 4. the stats page and the protocol inspector ------------------------------------------
  if [ "${CHAT_PAGES:-1}" != 0 ]; then
    # two ports, different from each other (two picks in a row may, rarely, be the same one)
    STATS_PORT=$(free_port)
    for _ in $(seq 20); do
      INSPECT_PORT=$(free_port)
      [ "$INSPECT_PORT" = "$STATS_PORT" ] || break
    done
    if [ "$INSPECT_PORT" = "$STATS_PORT" ]; then
      echo "browser-test: could not pick two free ports" >&2
      exit 1
    fi
    echo "browser-test: the stats page on 127.0.0.1:$STATS_PORT, the inspector on 127.0.0.1:$INSPECT_PORT"
    CHAT_PORT=$STATS_PORT CHAT_SERVER=$CHAT_SERVER ARTIFACTS=$ARTIFACTS \
      timeout -k 10 300 node tests/browser/stats.test.mjs
    CHAT_PORT=$INSPECT_PORT CHAT_SERVER=$CHAT_SERVER ARTIFACTS=$ARTIFACTS \
      timeout -k 10 300 node tests/browser/inspect.test.mjs
  fi
fi

# --- 5. two nodes joined through Redis -----------------------------------------------------------
# Built last, into the same target/debug/examples/chatroom: the chatroom of steps 3 and 4 has run by then.
if [ -z "${NODES_SERVER:-}" ]; then
  nice cargo build --example chatroom --features redis
  NODES_SERVER="${CARGO_TARGET_DIR:-target}/debug/examples/chatroom"
fi
# Three different free ports (two picks in a row may, rarely, be the same one).
ports=()
for _ in $(seq 20); do
  port=$(free_port)
  case " ${ports[*]-} " in *" $port "*) ;; *) ports+=("$port") ;; esac
  [ "${#ports[@]}" -lt 3 ] || break
done
if [ "${#ports[@]}" -lt 3 ]; then
  echo "browser-test: could not pick three free ports" >&2
  exit 1
fi
NODE_PORTS="${ports[0]},${ports[1]}" REDIS_PORT=${ports[2]}
echo "browser-test: two nodes '$NODES_SERVER' on 127.0.0.1:${NODE_PORTS/,/ and }, redis-server on $REDIS_PORT"
CHAT_PORTS=$NODE_PORTS REDIS_PORT=$REDIS_PORT NODES_SERVER=$NODES_SERVER ARTIFACTS=$ARTIFACTS \
  timeout -k 10 300 node tests/browser/nodes.test.mjs
