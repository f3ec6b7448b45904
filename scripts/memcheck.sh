#!/usr/bin/env bash
# The codec's unit tests under valgrind's memcheck: the tests of src/frame.rs, src/message.rs, src/utf8.rs,
# src/inbound.rs, src/deflate/ and src/handshake.rs from the library's test binary (`cargo test --lib`), run as they
# are built for `cargo test` (wsloop and the deflate engines at opt-level 3 with debug assertions, the other
# dependencies unoptimized, debug info for all).
# memcheck watches every read and write of the machine code, so it checks what the compiler made of our `unsafe`
# (`Probe::decode_trusting` in message.rs, called from inbound.rs, whose `read_behind` takes bytes a `Recv` wrote
# into spare capacity; the AVX2 loop of utf8.rs that reads and writes through a raw pointer)
# and of the code around it (frame.rs's unmasking, 64 bytes a step), and zlib-rs's own `unsafe`, which the deflate
# tests go through. It reports a read or write outside an allocation, a branch on bytes never written, a bad free, a
# leak. Exits non-zero if it reports anything or a test fails.
#
#   scripts/memcheck.sh          # what .ci/run does: about a minute once `cargo test` has built (two if busy)
#   scripts/memcheck.sh --all    # also the three tests left out below (about 50 minutes more)
#
# Environment: MEMCHECK_FLAGS, more options for valgrind, e.g. MEMCHECK_FLAGS=--track-origins=yes to be told where
# an uninitialised value came from (slower). Installs valgrind (Debian's) and python3 with apt-get when missing.
# AddressSanitizer would need `-Zsanitizer=address`; memcheck needs no other compiler nor any rebuild.
#
# valgrind's options, and why:
#   --error-exitcode=1                 any error it reports fails the run, whatever the tests said
#   --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite
#                                      a block nothing points to any more is an error; the standard library's
#                                      thread handles and thread-locals, still reachable or "possibly lost" (held
#                                      through an interior pointer) at exit, are not ours and are not shown
#   --num-callers=40                   Rust's stacks are deep once each inlined call counts as a frame
#   -q                                 nothing but the errors
# The tests run one at a time (--test-threads=1): valgrind runs one thread at a time anyway, and so each report
# comes out under the name of the test that made it.
set -euo pipefail

all=0
case "${1:-}" in
    --all) all=1 ;;
    "") ;;
    *) echo "usage: scripts/memcheck.sh [--all]" >&2
       exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
    echo "memcheck.sh: cargo is not installed (this project needs a Rust toolchain)" >&2
    exit 1
fi
missing=()
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "memcheck.sh: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The library's test binary: the one artifact of `cargo test --lib` with an executable. Built with the same
# profile and features as `cargo test`, so after it this is a no-op.
bin="$(cargo test --lib --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        print(msg["executable"])
')"
if [ -z "$bin" ] || [ "$(wc -l <<<"$bin")" -ne 1 ] || [ ! -x "$bin" ]; then
    echo "memcheck.sh: expected one test executable from cargo test --lib, got: '$bin'" >&2
    exit 1
fi

# Left out unless --all: each repeats the same few memory accesses with other bytes, millions of times. What
# memcheck judges, the addresses read and written and whether those bytes were ever written, depends on a text's
# length (and where the masking key starts), never on its bytes; those lengths are covered by the tests that stay:
# every length from 0 to 131 bytes of mixed text with each byte broken, on both paths
# (every_length_of_mixed_text_with_each_byte_broken), random texts of up to 300 bytes (the proptests), and the
# message tests that unmask and check in one pass. The times are under valgrind, on two shared cores.
heavy=(
    # 65,536 pairs of bytes at every place in texts of 128 and 131 bytes: two lengths, 17 million texts (1,140 s).
    utf8::tests::every_pair_of_bytes_at_every_place
    # 83,521 four-byte windows at every place in the same two lengths: 21 million texts (1,375 s).
    utf8::tests::every_four_byte_window_of_classes_at_every_place
    # Every character after 40 and 61 bytes of ASCII, whole and cut: lengths 41 to 65 (440 s).
    utf8::tests::every_character_whole_and_cut_at_each_length
)

listed="$("$bin" --list --format=terse | sed -n 's/: test$//p')"
for name in "${heavy[@]}"; do
    if ! grep -qxF "$name" <<<"$listed"; then
        echo "memcheck.sh: no test named $name any more: update the list in scripts/memcheck.sh" >&2
        exit 1
    fi
done
tests=()
while read -r name; do
    if [ "$all" -eq 0 ] && printf '%s\n' "${heavy[@]}" | grep -qxF "$name"; then
        continue
    fi
    tests+=("$name")
done < <(grep -E '^(frame|message|utf8|inbound|deflate|handshake)::' <<<"$listed")

left_out=""
[ "$all" -eq 1 ] || left_out=", ${#heavy[@]} left out (see the script)"
echo "memcheck.sh: $(valgrind --version), ${#tests[@]} tests of $(basename "$bin")$left_out"
start=$SECONDS
status=0
# shellcheck disable=SC2086 # MEMCHECK_FLAGS is a list of options
valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --num-callers=40 ${MEMCHECK_FLAGS:-} \
    "$bin" --exact --test-threads=1 "${tests[@]}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "memcheck.sh: FAILED (exit $status) after $((SECONDS - start)) s: a test failed, or memcheck reported errors"
    echo "memcheck.sh: (its lines start with ==PID== and come under the name of the test that made them)"
    echo "memcheck.sh: one test again: valgrind --num-callers=40 --track-origins=yes $bin --exact <test name>"
    exit "$status"
fi
echo "memcheck.sh: no errors, ${#tests[@]} tests in $((SECONDS - start)) s"
