#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time: the frame decoder, the handshake parser, the message
# assembler fed a frame stream cut at random places, and UTF-8 validation (plain and while unmasking). Exits
# non-zero if any target finds a crash.
#
#   scripts/fuzz.sh                  # 60 s per target, every target
#   scripts/fuzz.sh 20               # a 20 s smoke run per target (what .ci/run does)
#   scripts/fuzz.sh 300 assembler    # one target, five minutes
#
# Environment: FUZZ_SANITIZER=address|none (default: address when the toolchain ships its runtime),
# CARGO_TARGET_DIR (default fuzz/target). One libFuzzer process at a time: the machines have two cores.
#
# What a run leaves behind (all git-ignored): fuzz/corpus/<target>/ grows the inputs that found new coverage and is
# reused by the next run; a crash is written to fuzz/artifacts/<target>/. To turn a crash into a regression test:
#   cargo fuzz tmin <target> fuzz/artifacts/<target>/crash-...   # RUSTC_BOOTSTRAP=1 as below
# then add its bytes as a test in tests/regressions.rs, which calls the same check (fuzz/src/checks.rs).
#
# Why this works on stable Rust: cargo-fuzz is made for nightly. Its instrumentation flags (-Cpasses=sancov-module,
# -Cllvm-args=...) are stable, but AddressSanitizer needs `-Zsanitizer=address`, which stable rustc refuses. The
# stable toolchain does ship the sanitizer runtimes (librustc-stable_rt.asan.a), so RUSTC_BOOTSTRAP=1 lets stable
# accept the -Z flag: it only unlocks unstable options, the compiler is the same. (`--sanitizer none` passes no -Z
# flag and would build on plain stable.) ASan watches wsloop's own `unsafe` (the AVX2 loops in frame.rs and
# utf8.rs, which read and write through raw pointers) and its dependencies' (httparse's SIMD scanning). Where the runtime is missing, the script falls back to
# `--sanitizer none`: the targets still find panics, failed assertions and overflows, just not memory errors.
# The targets are built with cargo-fuzz's default profile: optimized, with debug assertions and overflow checks.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(frame_decode handshake_parse assembler utf8)
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v cargo >/dev/null; then
    echo "fuzz.sh: cargo not found; install Rust with rustup first" >&2
    exit 1
fi

# libfuzzer-sys compiles libFuzzer itself, which is C++.
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    echo "fuzz.sh: installing a C++ compiler for libFuzzer"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    nice -n 10 cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1

sanitizer="${FUZZ_SANITIZER:-}"
if [[ -z "$sanitizer" ]]; then
    sysroot="$(rustc --print sysroot)"
    host="$(rustc -vV | sed -n 's/^host: //p')"
    if compgen -G "$sysroot/lib/rustlib/$host/lib/librustc-*_rt.asan.a" >/dev/null; then
        sanitizer=address
    else
        sanitizer=none
    fi
fi

# Cargo caches rustc's answers per set of flags but not per RUSTC_BOOTSTRAP, so a build once tried without it keeps
# failing with "the option `Z` is only accepted on the nightly compiler". The cache is cheap to rebuild.
rm -f "${CARGO_TARGET_DIR:-fuzz/target}/.rustc_info.json"

echo "fuzz.sh: $(cargo fuzz --version), $(rustc --version), sanitizer $sanitizer, ${seconds}s per target"
nice -n 10 cargo fuzz build --sanitizer "$sanitizer"

status=0
summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/seeds/$target"
    log="$(mktemp)"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    echo "fuzz.sh: $target for ${seconds}s"
    # The first directory receives new inputs; the committed seeds are only read.
    if nice -n 10 cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
        grep -E -A12 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | head -40 || true
        grep -E "Test unit written to" "$log" || true
        echo "fuzz.sh: replay it with RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target fuzz/artifacts/$target/<file>;"
        echo "fuzz.sh: then minimize it with cargo fuzz tmin and add it to tests/regressions.rs"
    fi
    done_line="$(grep -E '^#[0-9]+ +DONE' "$log" | tail -1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' <<<"${done_line:-$(grep -E '^#[0-9]+' "$log" | tail -1)}" || true)"
    summary+=("$(printf '%-16s %-6s runs %-10s exec/s %-7s %s' "$target" "$result" "${runs:-?}" "${rate:-?}" "${cov:-}")")
    rm -f "$log"
done

echo "fuzz.sh: summary (${seconds}s per target, sanitizer $sanitizer)"
printf '  %s\n' "${summary[@]}"
exit "$status"
