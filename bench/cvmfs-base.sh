#!/bin/sh
# Issue 11, item 3: the sandbox's guest root through the data plane instead of the app
# version. Publishes the test image's rootfs/ at /base (time, size, objects), then reads
# /base over HTTP through a fresh host cache as gah-app does for a host's first sandbox
# task (gah-publish --url --get: verify, prefetch, materialise), one download at a time and
# eight at a time, and again from a warm cache (another base content on the same host, or
# the same after the tree was dropped); against what the app version carried before
# (rootfs.tar, gzipped on the wire) and unpacking it. Results go to docs/BENCHMARKS.md by
# hand.
#
# Usage: bench/cvmfs-base.sh [OUT]   (default .cache/bench-cvmfs-base; removed and made again)
# Needs: the test image (scripts/setup.sh), python3 (its threaded http.server serves the
# repository folder as a plain web server would), ~3 GB free.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-.cache/bench-cvmfs-base}
IMAGE=.cache/images/test
[ -d "$IMAGE/rootfs" ] || { echo "no $IMAGE/rootfs: run scripts/setup.sh" >&2; exit 1; }
. bench/lib.sh
build_publisher
rm -rf "$OUT"
mkdir -p "$OUT/src"

# Before: the app version's rootfs.tar (made by package-app-version.sh; gzipped on the wire).
[ -f "$IMAGE/rootfs.tar" ] || tar -C "$IMAGE/rootfs" --sort=name --numeric-owner --format=gnu --exclude=./dev/* -cf "$IMAGE/rootfs.tar" .
gz=$(gzip -1 -c "$IMAGE/rootfs.tar" | wc -c)
echo "before: rootfs.tar $(size "$IMAGE/rootfs.tar") B, $gz B gzipped (-1; update_versions gzips with -9)"
mkdir -p "$OUT/unpacked"
t0=$(now); tar -C "$OUT/unpacked" -xf "$IMAGE/rootfs.tar"; sync; t1=$(now)
echo "before: unpacking rootfs.tar (page cache warm) + sync: $(secs "$t0" "$t1") s"
rm -rf "$OUT/unpacked"

# Hard links: the source tree costs no space.
cp -al "$IMAGE/rootfs" "$OUT/src/base"
t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish.txt" 2> "$OUT/publish.err"
t1=$(now)
echo "publish /base: $(secs "$t0" "$t1") s, repository $(size "$OUT/stratum/gentoo.gah") B: $(tail -1 "$OUT/publish.txt")"

serve "$OUT/stratum" gentoo.gah "$OUT/http.log"

read_base() {
    label=$1; threads=$2; cache=$3
    rm -rf "$OUT/host"
    t0=$(now)
    line=$("$BIN" --url "$URL" --keys "$OUT/keys" --cache "$cache" --threads "$threads" --get /base --out "$OUT/host")
    sync
    t1=$(now)
    echo "$label: ${line#*: }; $(secs "$t0" "$t1") s"
}
read_base "first task, cold cache, 1 download at a time" 1 "$OUT/cache-1"
read_base "first task, cold cache, 8 at a time" 8 "$OUT/cache-8"
read_base "warm cache (tree dropped, objects kept)" 8 "$OUT/cache-8"
echo "host cache after: $(size "$OUT/cache-8") B; the tree: $(size "$OUT/host") B"

# A base update: one file of the root changed (a new file, not written through the hard link).
rm -f "$OUT/src/base/etc/motd"
echo "gentoo@home base, updated" > "$OUT/src/base/etc/motd"
t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish-2.txt"
t1=$(now)
echo "republish after one file of the base changed: $(secs "$t0" "$t1") s: $(tail -1 "$OUT/publish-2.txt")"
read_base "the updated base, warm cache" 8 "$OUT/cache-8"
