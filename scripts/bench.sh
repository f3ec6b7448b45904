#!/usr/bin/env bash
# Frame codec benchmark, wsloop beside tungstenite and fastwebsockets on identical input bytes
# (peers/benches/frame.rs), then a compact table: median time and throughput of each contender,
# wsloop's time as a multiple of a plain memcpy of the same bytes, and each peer's time divided
# by wsloop's (above 1 means wsloop is faster).
#
#   scripts/bench.sh                   # everything, about five minutes on two cores
#   scripts/bench.sh --runs 3          # everything three times; each figure the median of the runs
#   scripts/bench.sh decode_text/      # one criterion group (any criterion filter works)
#   scripts/bench.sh --table           # only print the table of the last results
#
# With --runs, each run's results are kept in peers/target/bench-runs/<n> and the table is made
# over all of them: on a shared machine one run of a memory-bound row (16 MiB) can move by 10%.
# The wsloop-only codec bench is `cargo bench --bench frame` in the repository root.
set -euo pipefail
cd "$(dirname "$0")/../peers"

if ! command -v cargo >/dev/null 2>&1; then
    echo "bench.sh: cargo is not installed (this project needs a Rust toolchain, 1.87 or newer)" >&2
    exit 1
fi

runs=1
if [ "${1:-}" = "--runs" ]; then
    runs="${2:-}"
    if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
        echo "usage: scripts/bench.sh [--runs N] [CRITERION_FILTER...] | --table" >&2
        exit 2
    fi
    shift 2
fi

if [ "${1:-}" = "--table" ]; then
    cargo run --release --quiet --bin benchtable -- target/criterion
    exit 0
fi

if [ "$runs" -eq 1 ]; then
    nice cargo bench --bench frame -- "$@"
    cargo run --release --quiet --bin benchtable -- target/criterion
    exit 0
fi

rm -rf target/bench-runs
dirs=()
for n in $(seq 1 "$runs"); do
    echo "bench.sh: run $n of $runs"
    nice cargo bench --bench frame -- "$@"
    mkdir -p target/bench-runs
    cp -r target/criterion "target/bench-runs/$n"
    dirs+=("target/bench-runs/$n")
done
cargo run --release --quiet --bin benchtable -- "${dirs[@]}"
