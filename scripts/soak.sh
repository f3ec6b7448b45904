#!/usr/bin/env bash
# Soak tests on loopback: the long, #[ignore]d tests of tests/soak.rs, built in release mode, bounded in time,
# then their figures (connect rate, broadcast time, server memory per connection, memory during a long chat with
# a slow reader). The quick soak and fault tests of the same file run with plain `cargo test`.
#
#   scripts/soak.sh                  # 10,000 connections and the 10,000-message chat; under a minute once built
#   scripts/soak.sh --conns 20000    # more connections (the test raises RLIMIT_NOFILE; root may raise the hard limit)
#   scripts/soak.sh --timeout 300    # the bound on the test run, in seconds (default 180; the build is not counted)
#
# Exit status: non-zero if a test fails or the run goes over its bound. A test that cannot get the file
# descriptors it needs skips itself; this script then says so and exits 0 (with --strict, 1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONNS=10000 LIMIT=180 STRICT=0
while [ $# -gt 0 ]; do
    case $1 in
        --conns) CONNS=$2; shift ;;
        --timeout) LIMIT=$2; shift ;;
        --strict) STRICT=1 ;;
        *) echo "usage: scripts/soak.sh [--conns N] [--timeout SECONDS] [--strict]" >&2
           exit 2 ;;
    esac
    shift
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "soak.sh: cargo is not installed (this project needs a Rust toolchain)" >&2
    exit 1
fi
if ! command -v timeout >/dev/null 2>&1; then
    # coreutils provides timeout; it is on every Debian system, but a minimal image may lack it.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coreutils
fi
if [ ! -r /proc/self/status ]; then
    echo "soak.sh: the tests read /proc (Linux only)" >&2
    exit 1
fi

cd "$ROOT"
echo "== building tests/soak.rs (release)"
nice cargo test --release --test soak --no-run --quiet

echo "== running the long soak tests (bounded to ${LIMIT}s)"
echo "   $(nproc) cores; RLIMIT_NOFILE soft $(ulimit -Sn), hard $(ulimit -Hn); $(uname -sr)"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
status=0
WSLOOP_SOAK_CONNS=$CONNS timeout --kill-after=10 "$LIMIT" \
    cargo test --release --quiet --test soak -- --ignored --nocapture --test-threads=1 2>&1 | tee "$OUT" ||
    status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "soak.sh: the soak tests did not finish within ${LIMIT}s" >&2
fi

echo
echo "== figures"
grep -o 'SOAK .*' "$OUT" | sed 's/^SOAK /  /' || echo "  (none: the tests did not get far enough to print any)"
if grep -q 'skipped:' "$OUT"; then
    echo
    echo "== SKIPPED"
    grep -o 'skipped: .*' "$OUT" | sed 's/^/  /'
    if [ "$STRICT" = 1 ] && [ "$status" = 0 ]; then
        status=1
    fi
fi
exit "$status"
