#!/bin/sh
# Issue 11, item 3 (vm flavour): the guest's root disk through the data plane. Publishes the
# test image's rootfs.ext4 (a sparse 4 GiB ext4 image) as the only file of a repository
# (time, size, chunks), reads it over HTTP through a fresh host cache as gah-app would
# (gah-publish --url --get: verify, fetch chunk by chunk, write sparse), with the reader's
# peak memory, then publishes it again after one block changed (what a rebuilt image costs a
# host). Against what the vm app version carries today: the image file itself (gzipped on
# the wire by update_versions). Results go to docs/BENCHMARKS.md by hand.
#
# Usage: bench/cvmfs-disk.sh [OUT]   (default .cache/bench-cvmfs-disk; removed and made again)
# Needs: the test image (scripts/setup.sh), python3, /usr/bin/time (GNU time), ~3 GB free.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-.cache/bench-cvmfs-disk}
DISK=.cache/images/test/rootfs.ext4
[ -f "$DISK" ] || { echo "no $DISK: run scripts/setup.sh" >&2; exit 1; }
. bench/lib.sh
build_publisher
rm -rf "$OUT"
mkdir -p "$OUT/src/disk"

cp --sparse=always "$DISK" "$OUT/src/disk/rootfs.ext4"
echo "the image: $(stat -c %s "$DISK") B long, $(du -B1 "$DISK" | cut -f1) B on disk"
t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish-1.txt"
t1=$(now)
echo "publish: $(secs "$t0" "$t1") s, repository $(size "$OUT/stratum/gentoo.gah") B, $(find "$OUT/stratum" -name '*P' | wc -l) chunk objects: $(tail -1 "$OUT/publish-1.txt")"

serve "$OUT/stratum" gentoo.gah "$OUT/http.log"
t0=$(now)
/usr/bin/time -f "%M" -o "$OUT/rss.txt" "$BIN" --url "$URL" --keys "$OUT/keys" --cache "$OUT/cache" --get /disk/rootfs.ext4 --out "$OUT/read" > "$OUT/read.txt" 2>&1
t1=$(now)
echo "read, cold cache: $(secs "$t0" "$t1") s, peak RSS $(cat "$OUT/rss.txt") KiB; $(tail -1 "$OUT/read.txt")"
echo "written: $(stat -c %s "$OUT/read/rootfs.ext4") B long, $(du -B1 "$OUT/read/rootfs.ext4" | cut -f1) B on disk; cache $(size "$OUT/cache") B"
cmp "$DISK" "$OUT/read/rootfs.ext4" && echo "identical to the image"

# One block of the image changed, as a rebuild that changed one file would.
printf 'gentoo@home bench: one block changed' | dd of="$OUT/src/disk/rootfs.ext4" bs=1 seek=$((512 << 20)) conv=notrunc status=none
t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish-2.txt"
t1=$(now)
echo "republish after one block changed: $(secs "$t0" "$t1") s: $(tail -1 "$OUT/publish-2.txt")"
rm -rf "$OUT/read"
t0=$(now)
"$BIN" --url "$URL" --keys "$OUT/keys" --cache "$OUT/cache" --get /disk/rootfs.ext4 --out "$OUT/read" > "$OUT/read-2.txt" 2>&1
t1=$(now)
echo "read after the update, warm cache: $(secs "$t0" "$t1") s; $(tail -1 "$OUT/read-2.txt")"
cmp "$OUT/src/disk/rootfs.ext4" "$OUT/read/rootfs.ext4" && echo "identical to the changed image"
