#!/usr/bin/env bash
# Frame codec benchmark, wsloop beside tungstenite and fastwebsockets on identical input bytes
# (peers/benches/frame.rs), then a compact table: median time and throughput of each contender,
# wsloop's time as a multiple of a plain memcpy of the same bytes, and each peer's time divided
# by wsloop's (above 1 means wsloop is faster).
#
#   scripts/bench.sh                   # everything, about four minutes on two cores
#   scripts/bench.sh decode_text/      # one criterion group (any criterion filter works)
#   scripts/bench.sh --table           # only print the table of the last results
#
# The wsloop-only codec bench is `cargo bench --bench frame` in the repository root.
set -euo pipefail
cd "$(dirname "$0")/../peers"

if ! command -v cargo >/dev/null 2>&1; then
    echo "bench.sh: cargo is not installed (this project needs a Rust toolchain, 1.87 or newer)" >&2
    exit 1
fi

if [ "${1:-}" != "--table" ]; then
    nice cargo bench --bench frame -- "$@"
fi
cargo run --release --quiet --bin benchtable -- target/criterion
