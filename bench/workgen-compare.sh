#!/bin/sh
# Work generator benchmarks (issues 3 and 12): pairwise rows per ebuild model against
# covertable (plain and optimised), PICT and allpairspy given the same constrained model, and
# wall time / peak memory of a whole-snapshot plan (GURU, and GURU replicated to ::gentoo
# size). Results go to docs/BENCHMARKS.md by hand.
#
# Usage: [PICT=path/to/pict] bench/workgen-compare.sh [GURU_SAMPLE] [BIG] [TIMEOUT_S]
# Needs: /work/shared/data/md5-cache (or DATA=...), python3 with venv, /usr/bin/time.
set -eu
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/shared/data/md5-cache}
SAMPLE=${1:-30}
BIG=${2:-5}
TIMEOUT=${3:-20}
VENV=.cache/bench-venv
OUT=${OUT:-.cache/bench-workgen}
mkdir -p "$OUT"

# Peers from PyPI, in their own venv. PICT (github.com/microsoft/pict; its PyPI binding does
# not build) is used when PICT names a binary built by hand (`make` in its checkout).
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q covertable allpairspy
PICTARG=
if [ -n "${PICT:-}" ]; then
    PICTARG="--pict $PICT"
else
    echo "PICT unset: PICT skipped" >&2
fi

cargo build --release -q -p gah-workgen -p gah-ebuild --examples --bins
BIN=target/release/gah-workgen

echo "== models" >&2
cargo run --release -q -p gah-ebuild --example bench_models -- 4 "$DATA/guru" "$DATA/funtoo-core-kit" > "$OUT/models.jsonl"
# shellcheck disable=SC2086
"$VENV/bin/python" bench/workgen_compare.py "$OUT/models.jsonl" --guru-sample "$SAMPLE" --big "$BIG" --timeout "$TIMEOUT" $PICTARG | tee "$OUT/compare.md"
# Every model of 4-17 flags (issue 12's held-out class): plain arrays, then with issue 3's
# mandatory rows (peers get them as seeds where they take seeds).
# shellcheck disable=SC2086
"$VENV/bin/python" bench/workgen_compare.py "$OUT/models.jsonl" --flags 4-17 --summary --timeout "$TIMEOUT" $PICTARG | tee "$OUT/compare-plain.md"
# shellcheck disable=SC2086
"$VENV/bin/python" bench/workgen_compare.py "$OUT/models.jsonl" --flags 4-17 --summary --mandatory --timeout "$TIMEOUT" $PICTARG | tee "$OUT/compare-mandatory.md"

# Wall time and peak RSS of `plan --strategy pairwise` on 2 threads, output discarded.
timed() {
    label=$1
    shift
    /usr/bin/time -v "$BIN" plan --strategy pairwise --threads 2 --compiler gcc "$@" > /dev/null 2> "$OUT/time-$label.txt"
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$OUT/time-$label.txt")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/time-$label.txt")
    summary=$(grep '^gah-workgen:' "$OUT/time-$label.txt" | tail -1)
    echo "| $label | $wall | $((rss / 1024)) MiB | $summary |"
}

# ::gentoo size: copies of GURU's md5-cache under renamed categories (cat-rN) until ~34k
# entries, in a temporary repository.
REPL=$(mktemp -d)
trap 'rm -rf "$REPL"' EXIT
mkdir -p "$REPL/metadata/md5-cache" "$REPL/profiles"
echo replicated > "$REPL/profiles/repo_name"
n=0
r=0
while [ "$n" -lt 34000 ]; do
    for cat in "$DATA/guru/metadata/md5-cache"/*/; do
        c=$(basename "$cat")
        cp -r "$cat" "$REPL/metadata/md5-cache/$c-r$r"
    done
    r=$((r + 1))
    n=$(find "$REPL/metadata/md5-cache" -type f | wc -l)
done

echo "| snapshot | wall | peak RSS | plan summary |"
echo "|---|---:|---:|---|"
timed guru --repo "$DATA/guru"
timed guru+core-kit --repo "$DATA/guru" --repo "$DATA/funtoo-core-kit"
timed "replicated-$n" --repo "$REPL"
