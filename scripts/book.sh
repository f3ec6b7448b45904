#!/usr/bin/env bash
# Builds and checks the book (book/, an mdBook that rebuilds the PHP chatroom in Rust step by step).
#
#   bash scripts/book.sh
#
# Steps, for the English edition (book/) and, once it exists, the Chinese one (book/zh-CN/, a second mdBook that
# includes the same example files):
#   1. every {{#include FILE}} or {{#include FILE:ANCHOR}} points at a file that exists and, for an anchor, at a
#      file holding both `ANCHOR: NAME` and `ANCHOR_END: NAME` (mdBook fails on a missing file, but an anchor it
#      cannot find gives an empty listing, silently);
#   2. every `cargo run --example NAME` in the text names an example that exists;
#   3. `mdbook build` (HTML in target/book/; the Chinese edition's where its book.toml says) and `mdbook test` (the
#      Rust snippets that stand alone; the listings included from examples/ are marked `ignore`, since cargo builds
#      them and tests/book_steps.rs runs them).
# Then README.md and README.zh-CN.md: the same headings, level by level, in the same order.
# First, if book/zh-CN/src/SUMMARY.md exists: both editions have the same chapters, in the same order and nesting,
# with the same file names; and for each chapter, its file exists in both editions, with as many `## ` headings
# (outside code blocks) and the same includes, in the same order (a section or a listing left out of a translation).
#
# mdBook itself: the exact version below, from PATH or target/tools/bin (under CARGO_TARGET_DIR if that is set),
# installed there with `cargo install --locked` if it is in neither. MDBOOK=/path/to/mdbook picks a binary instead
# (it must be that version too).
set -euo pipefail

MDBOOK_VERSION=0.4.52

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
tools="$target_dir/tools"

say() { echo "book: $*"; }
die() { echo "book: error: $*" >&2; exit 1; }

# --- mdBook, the exact version ---------------------------------------------------------------------------------
is_wanted() { [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "mdbook v$MDBOOK_VERSION" ]; }

mdbook=""
if [ -n "${MDBOOK:-}" ]; then
    is_wanted "$MDBOOK" || die "MDBOOK=$MDBOOK is not mdbook v$MDBOOK_VERSION"
    mdbook=$MDBOOK
else
    for candidate in "$(command -v mdbook || true)" "$tools/bin/mdbook"; do
        if [ -n "$candidate" ] && is_wanted "$candidate"; then
            mdbook=$candidate
            break
        fi
    done
fi
if [ -z "$mdbook" ]; then
    say "installing mdbook $MDBOOK_VERSION into $tools (once; a few minutes)"
    cargo install mdbook --locked --version "$MDBOOK_VERSION" --root "$tools" --quiet
    mdbook="$tools/bin/mdbook"
    is_wanted "$mdbook" || die "$mdbook is not mdbook v$MDBOOK_VERSION after the install"
fi
say "using $mdbook ($("$mdbook" --version))"

# --- 1. includes and anchors -----------------------------------------------------------------------------------
# Prints one line per problem; returns non-zero if there was any.
check_includes() {
    local src=$1 problems=0 md directive target path anchor file
    while IFS= read -r md; do
        # {{#include ...}} and {{#rustdoc_include ...}}; one written \{{#include ...}} is text, not a directive.
        while IFS= read -r directive; do
            [ -n "$directive" ] || continue
            target=$(sed -E 's/^\{\{#(rustdoc_)?include[[:space:]]+//; s/[[:space:]]*\}\}$//' <<<"$directive")
            path=${target%%:*}
            anchor=""
            [[ $target == *:* ]] && anchor=${target#*:}
            file="$(dirname "$md")/$path"
            if [ ! -f "$file" ]; then
                echo "  $md: $directive: no file $file"
                problems=1
                continue
            fi
            # No anchor (the whole file) or line numbers (N, N:M, :M): nothing more to check.
            if [ -z "$anchor" ] || [[ $anchor =~ ^[0-9:]*$ ]]; then
                continue
            fi
            if ! [[ $anchor =~ ^[A-Za-z0-9_-]+$ ]]; then
                echo "  $md: $directive: '$anchor' is not an anchor name"
                problems=1
                continue
            fi
            local start="ANCHOR:[[:space:]]*$anchor([^A-Za-z0-9_-]|\$)"
            local end="ANCHOR_END:[[:space:]]*$anchor([^A-Za-z0-9_-]|\$)"
            if ! grep -Eq "$start" "$file" || ! grep -Eq "$end" "$file"; then
                echo "  $md: $directive: $file has no ANCHOR: $anchor ... ANCHOR_END: $anchor"
                problems=1
            elif [ "$(grep -Ec "$start" "$file")" -ne 1 ]; then
                echo "  $md: $directive: $file has ANCHOR: $anchor more than once"
                problems=1
            fi
        done < <(grep -oE '(^|[^\\])\{\{#(rustdoc_)?include[[:space:]][^}]*\}\}' "$md" | sed -E 's/^[^{]//')
    done < <(find "$src" -name '*.md' | sort)
    return $problems
}

# --- 2. the examples the text names ----------------------------------------------------------------------------
check_examples() {
    local src=$1 problems=0 name
    while IFS= read -r name; do
        if [ ! -f "examples/$name.rs" ]; then
            echo "  $src: \`cargo run --example $name\`: there is no examples/$name.rs"
            problems=1
        fi
    done < <(grep -rhoE 'cargo run (--release )?--example [A-Za-z0-9_]+' "$src" | awk '{print $NF}' | sort -u)
    return $problems
}

# --- the Chinese edition's chapters are the English edition's ---------------------------------------------------
# One line per chapter: its nesting (the indentation and list marker before the link) and its file name. Titles
# differ between the languages; files, order and nesting must not.
chapters() {
    grep -E '\]\([^)]*\.md\)' "$1" | sed -E 's/^([[:space:]]*(-[[:space:]]+)?)\[.*\]\(([^)]*\.md)\).*$/\1\3/'
}

# The `## ` headings of a chapter, outside fenced code blocks (a `## ` line in a listing is not a heading).
count_h2() {
    awk '/^[[:space:]]*```/ { fence = !fence; next } !fence && /^## / { n++ } END { print n + 0 }' "$1"
}

# The includes of a chapter, in order, without the leading ../ of their paths (the Chinese edition's chapters are
# one directory deeper, and include the same files).
includes_of() {
    { grep -oE '(^|[^\\])\{\{#(rustdoc_)?include[[:space:]][^}]*\}\}' "$1" || true; } |
        sed -E 's/^[^{]//; s/^(\{\{#(rustdoc_)?include[[:space:]]+)(\.\.\/)+/\1/'
}

# Each chapter of either summary: its file in both editions, as many `## ` headings, the same includes. Prints one
# line per problem; returns non-zero if there was any.
compare_chapters() {
    local problems=0 file en zh md h_en h_zh listings
    while IFS= read -r file; do
        en="book/src/$file"
        zh="book/zh-CN/src/$file"
        for md in "$en" "$zh"; do
            if [ ! -f "$md" ]; then
                echo "  $file: there is no $md"
                problems=1
            fi
        done
        [ -f "$en" ] && [ -f "$zh" ] || continue
        h_en=$(count_h2 "$en")
        h_zh=$(count_h2 "$zh")
        if [ "$h_en" -ne "$h_zh" ]; then
            echo "  $file: $h_en '## ' headings in $en, $h_zh in $zh"
            problems=1
        fi
        if ! listings=$(diff <(includes_of "$en") <(includes_of "$zh")); then
            echo "  $file: the editions include different listings (< $en, > $zh):"
            sed 's/^/    /' <<<"$listings"
            problems=1
        fi
    done < <({ chapters book/src/SUMMARY.md; chapters book/zh-CN/src/SUMMARY.md; } |
        sed -E 's/^[[:space:]]*(-[[:space:]]+)?//' | awk '!seen[$0]++')
    return $problems
}

if [ -f book/zh-CN/src/SUMMARY.md ]; then
    say "comparing the chapters of book/src/SUMMARY.md and book/zh-CN/src/SUMMARY.md"
    if ! diff <(chapters book/src/SUMMARY.md) <(chapters book/zh-CN/src/SUMMARY.md); then
        die "the editions differ in their chapters (< English, > Chinese)"
    fi
    say "both editions have the same $(chapters book/src/SUMMARY.md | wc -l) chapters"
    say "comparing each chapter's file, '## ' headings and includes in both editions"
    compare_chapters || die "the editions' chapters differ (see above)"
    say "every chapter has its file, as many '## ' headings and the same includes in both editions"
else
    say "no book/zh-CN/src/SUMMARY.md yet: no chapter comparison"
fi

# The two READMEs: the same headings, level by level, in the same order (outside fenced code).
heading_levels() {
    awk '/^```/ { fenced = !fenced; next } !fenced && /^#+ / { sub(/ .*/, ""); print }' "$1"
}
if [ -f README.zh-CN.md ]; then
    say "comparing the headings of README.md and README.zh-CN.md"
    if ! diff <(heading_levels README.md) <(heading_levels README.zh-CN.md) >/dev/null; then
        diff <(heading_levels README.md | nl) <(heading_levels README.zh-CN.md | nl) || true
        die "README.md and README.zh-CN.md differ in their headings (levels in order: < English, > Chinese)"
    fi
    say "both READMEs have the same $(heading_levels README.md | wc -l) headings, level by level"
fi

editions=(book)
[ -f book/zh-CN/book.toml ] && editions+=(book/zh-CN)

for edition in "${editions[@]}"; do
    src="$edition/src"
    [ -f "$src/SUMMARY.md" ] || die "$src/SUMMARY.md is missing"
    say "$edition/: checking includes and anchors"
    check_includes "$src" || die "$edition/: an include points at nothing (see above)"
    say "$edition/: checking the examples it names"
    check_examples "$src" || die "$edition/: the text names an example that does not exist (see above)"
    # --- 3. build and test -------------------------------------------------------------------------------------
    say "$edition/: mdbook build"
    "$mdbook" build "$edition"
    say "$edition/: mdbook test"
    "$mdbook" test "$edition"
done

# Where an edition's HTML went: its book.toml's build-dir (relative to the edition's directory), "book" if unset.
html_dir() {
    local dir
    dir=$(sed -nE 's/^[[:space:]]*build-dir[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$1/book.toml")
    dir=$(cd "$1/${dir:-book}" && pwd)
    echo "${dir#"$root"/}/"
}

html=""
for edition in "${editions[@]}"; do
    html+="${html:+, }$(html_dir "$edition")"
done
say "ok: ${editions[*]} built and tested; HTML in $html"
