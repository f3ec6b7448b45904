#!/usr/bin/env bash
# End-to-end test of the chat page (examples/chatroom.html) in a real headless Chromium.
#
#   scripts/browser-test.sh
#
# 1. installs what it needs if it is missing: Debian's chromium and fonts (emoji, CJK), Node.js,
#    and playwright-core from npm into tests/browser/node_modules (no browser download);
# 2. builds the chatroom example;
# 3. picks a free loopback port and runs tests/browser/chat.test.mjs, which starts, stops and
#    restarts the chatroom itself and drives two pages in Chromium.
# Screenshots and the server log go to artifacts/browser/ (git-ignored). Exits non-zero on any failure.
#
# CHAT_SERVER="cmd args" tests another server instead ("--port N" is appended); the build is skipped.
set -euo pipefail

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
if [ -z "${CHAT_SERVER:-}" ]; then
  nice cargo build --example chatroom
  CHAT_SERVER="target/debug/examples/chatroom"
fi

# --- 3. the test -----------------------------------------------------------------------------
CHAT_PORT=$(node -e '
  const s = require("net").createServer();
  s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')

mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png "$ARTIFACTS/server.pid"

# The test stops its own server; this is the safety net if the test itself is killed.
cleanup() {
  local pid
  pid=$(cat "$ARTIFACTS/server.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "--port $CHAT_PORT"; then
    kill -9 "$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "browser-test: server '$CHAT_SERVER' on 127.0.0.1:$CHAT_PORT, artifacts in $ARTIFACTS"
CHAT_PORT=$CHAT_PORT CHAT_SERVER=$CHAT_SERVER ARTIFACTS=$ARTIFACTS \
  timeout -k 10 300 node tests/browser/chat.test.mjs
