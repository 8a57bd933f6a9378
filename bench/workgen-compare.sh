#!/bin/sh
# Work generator benchmarks (issue 3): pairwise rows per ebuild model against covertable and
# allpairspy under the same REQUIRED_USE, and wall time / peak memory of a whole-snapshot
# plan (GURU, and GURU replicated to ::gentoo size). Results go to docs/BENCHMARKS.md by hand.
#
# Usage: bench/workgen-compare.sh [GURU_SAMPLE] [BIG] [TIMEOUT_S]
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

# Peers from PyPI, in their own venv. PICT's binding (pypict) is tried; it needs Cython and
# a C++ build, and is skipped when it does not build.
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q covertable allpairspy
"$VENV/bin/pip" install -q pypict >/dev/null 2>&1 || echo "pypict does not build here: PICT skipped" >&2

cargo build --release -q -p gah-workgen -p gah-ebuild --examples --bins
BIN=target/release/gah-workgen

echo "== models" >&2
cargo run --release -q -p gah-ebuild --example bench_models -- 4 "$DATA/guru" "$DATA/funtoo-core-kit" > "$OUT/models.jsonl"
"$VENV/bin/python" bench/workgen_compare.py "$OUT/models.jsonl" --guru-sample "$SAMPLE" --big "$BIG" --timeout "$TIMEOUT" | tee "$OUT/compare.md"

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
