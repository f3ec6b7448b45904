#!/usr/bin/env bash
# GET /metrics checked with Prometheus' own parser: the official Python client (prometheus_client, from PyPI, into
# a virtualenv under target/), while Python `websockets` clients talk to `echo --metrics` on a free loopback port.
# See scripts/metrics/check.py for what is checked.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/metrics-venv
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 keeps venv (and the pip it seeds) in a package of its own.
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "prometheus_client==0.21.1" "websockets==15.0.1"

cargo build --quiet --example echo
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/examples/echo --port "$PORT" --metrics > target/metrics-echo.log 2>&1 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
timeout 60 "$VENV/bin/python" scripts/metrics/check.py "$PORT"
