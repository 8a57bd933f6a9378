#!/bin/sh
# Work generator at ::gentoo size (issue 12): wall time and peak memory of
# `gah-workgen plan --strategy pairwise --stats` over a composite of real repositories, with
# and without the ffmpeg-class ebuilds (media-video/ffmpeg-<version>: ~146 flags, REQUIRED_USE
# of long implication chains over cpu_flags_*). Results go to docs/BENCHMARKS.md by hand.
#
# Usage: bench/workgen-composite.sh DIR [THREADS]
#   DIR holds one folder per repository, each with metadata/md5-cache (and profiles/ if
#   wanted), e.g. gentoo-mirror overlays and Funtoo kits extracted with
#   `git archive HEAD metadata/md5-cache metadata/layout.conf profiles | tar -x -C DIR/NAME`.
#   Record which repositories and commits it holds (docs/BENCHMARKS.md lists the set used).
# Warm page cache (every md5-cache file is read once before the timed runs).
# Output: a table row per run on stdout; /usr/bin/time -v and the --stats report in
# $OUT (default .cache/bench-workgen-composite).
set -eu
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench/workgen-composite.sh DIR [THREADS]}
THREADS=${2:-2}
OUT=${OUT:-.cache/bench-workgen-composite}
mkdir -p "$OUT"

cargo build --release -q -p gah-workgen
BIN=$PWD/target/release/gah-workgen

timed() {
    label=$1
    dir=$2
    set --
    for r in "$dir"/*/; do
        [ -d "${r}metadata/md5-cache" ] && set -- "$@" --repo "${r%/}"
    done
    if ! /usr/bin/time -v "$BIN" plan --strategy pairwise --stats --threads "$THREADS" --compiler gcc "$@" \
        > /dev/null 2> "$OUT/$label.txt"; then
        echo "$label: gah-workgen failed, see $OUT/$label.txt" >&2
        return 1
    fi
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$OUT/$label.txt")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/$label.txt")
    cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.1f s", s }' "$OUT/$label.txt")
    share=$(sed -n 's/.*Percent of CPU this job got: //p' "$OUT/$label.txt")
    summary=$(grep '^gah-workgen: [0-9]* ebuilds' "$OUT/$label.txt" | tail -1 | sed 's/^gah-workgen: //')
    incomplete=$(grep -c 'time budget' "$OUT/$label.txt" || true)
    echo "| $label | $wall | $cpu ($share) | $((rss / 1024)) MiB | $summary | $incomplete |"
}

# Warm cache for both runs: the files are read once before anything is timed.
find -L "$DIR" -path '*/metadata/md5-cache/*' -type f -exec cat {} + > /dev/null

echo "| run | wall | CPU user+sys (share) | peak RSS | gah-workgen's summary | ebuilds past their time budget |"
echo "|---|---:|---:|---:|---|---:|"
timed with-ffmpeg "$DIR"

# The same set without media-video/ffmpeg-<version>: repositories holding such entries are
# copied without them, the others linked.
NOFF=$(mktemp -d)
trap 'rm -rf "$NOFF"' EXIT
for r in "$DIR"/*/; do
    name=$(basename "$r")
    if ls "$r"metadata/md5-cache/media-video/ffmpeg-[0-9]* > /dev/null 2>&1; then
        cp -a "$r" "$NOFF/$name"
        rm -f "$NOFF/$name"/metadata/md5-cache/media-video/ffmpeg-[0-9]*
    else
        ln -s "$(cd "$r" && pwd)" "$NOFF/$name"
    fi
done
find -L "$NOFF" -path '*/metadata/md5-cache/*' -type f -exec cat {} + > /dev/null
timed without-ffmpeg "$NOFF"

echo "slowest ebuilds (with ffmpeg):" >&2
grep -A12 'stats:' "$OUT/with-ffmpeg.txt" >&2 || true
