#!/bin/sh
# Issue 11's figures for the CernVM-FS data plane: what a volunteer's host downloads through
# `gah-publish --url` (the host-side reader and its cache, what gah-app runs on data.json) for
# its first job, its tenth, a job of another package and a job after a tree update, against
# what a workunit carried before the data plane (repo.tar + distfiles.tar); the job start-up
# overhead of those reads (wall seconds to the job's folders, cold and warm cache) against
# unpacking the two tars; and what publishing costs, for the embedded overlay and for an
# md5-cache tree of ::gentoo's size. Results go to docs/BENCHMARKS.md by hand.
#
# Usage: bench/cvmfs.sh [OUT]   (default .cache/bench-cvmfs; removed and made again)
# Needs: the distfiles in .cache/distfiles (scripts/setup.sh), python3 (its http.server
# serves the repository folder as a plain web server would), ../shared/data/md5-cache/guru.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-.cache/bench-cvmfs}
. bench/lib.sh
build_publisher
rm -rf "$OUT"
mkdir -p "$OUT/src/repos" "$OUT/stratum" "$OUT/today"

# The tree a job read before the data plane as repo.tar + distfiles.tar.
cp -a vm-images/overlay "$OUT/src/repos/gah"
cp -a .cache/distfiles "$OUT/src/distfiles"
tar -C vm-images/overlay --sort=name --owner=0 --group=0 --numeric-owner -cf "$OUT/today/repo.tar" .
tar -C .cache/distfiles --sort=name --owner=0 --group=0 --numeric-owner -cf "$OUT/today/distfiles.tar" .
echo "before, per workunit: repo.tar $(size "$OUT/today/repo.tar") B, distfiles.tar $(size "$OUT/today/distfiles.tar") B"
# What gah-app did with them at every job's start: unpack both into the slot.
rm -rf "$OUT/unpacked" && mkdir -p "$OUT/unpacked/repo" "$OUT/unpacked/distfiles"
t0=$(now)
tar -C "$OUT/unpacked/repo" -xf "$OUT/today/repo.tar" && tar -C "$OUT/unpacked/distfiles" -xf "$OUT/today/distfiles.tar"
t1=$(now)
echo "before, start-up: unpacking both tars took $(secs "$t0" "$t1") s"

t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish-1.txt"
t1=$(now)
echo "publish overlay + distfiles: $(secs "$t0" "$t1") s, repository $(size "$OUT/stratum/gentoo.gah") B: $(cat "$OUT/publish-1.txt" | tail -1)"

serve "$OUT/stratum" gentoo.gah "$OUT/http.log"

# A job's inputs: the whole repository (Portage reads its profiles, eclasses and metadata)
# and the distfiles its ebuild's Manifest names.
distfiles_of() {
    for f in $(awk '$1 == "DIST" { print $2 }' "vm-images/overlay/$1/Manifest"); do printf -- ' --get /distfiles/%s' "$f"; done
}
job() {
    label=$1
    pkg=$2
    rm -rf "$OUT/job"
    # shellcheck disable=SC2046
    t0=$(now)
    line=$("$BIN" --url "$URL" --keys "$OUT/keys" --cache "$OUT/cache" --get /repos/gah $(distfiles_of "$pkg") --out "$OUT/job")
    t1=$(now)
    echo "$label ($pkg): ${line#*; }; start-up $(secs "$t0" "$t1") s"
}
job "job 1" app-arch/bzip2
for i in 2 3 4 5 6 7 8 9; do job "job $i" app-arch/bzip2 > /dev/null; done
job "job 10" app-arch/bzip2
job "job 11, another package" app-arch/xz-utils

# A tree update: one ebuild changed.
ebuild=$(ls "$OUT/src/repos/gah/app-arch/bzip2/"*.ebuild | head -1)
echo "# changed" >> "$ebuild"
t0=$(now)
"$BIN" --repo-dir "$OUT/stratum/gentoo.gah" --keys "$OUT/keys" "$OUT/src" > "$OUT/publish-2.txt"
t1=$(now)
echo "republish after one ebuild changed: $(secs "$t0" "$t1") s: $(tail -1 "$OUT/publish-2.txt")"
job "job 12, after the update" app-arch/bzip2
tar -C "$OUT/src/repos/gah" --sort=name --owner=0 --group=0 --numeric-owner -cf "$OUT/today/repo-2.tar" .
echo "before, after the update: a new repo.tar of $(size "$OUT/today/repo-2.tar") B"

# Publication at ::gentoo's size: nine copies of GURU's md5-cache (~34,000 entries), as
# nine repositories.
GURU=../shared/data/md5-cache/guru
if [ -d "$GURU/metadata/md5-cache" ]; then
    for i in 1 2 3 4 5 6 7 8 9; do
        mkdir -p "$OUT/big/repos/guru$i/metadata"
        cp -a "$GURU/metadata/md5-cache" "$OUT/big/repos/guru$i/metadata/"
    done
    entries=$(find "$OUT/big" -type f | wc -l)
    t0=$(now)
    "$BIN" --repo-dir "$OUT/stratum/big.gah" --name big.gah --keys "$OUT/keys" "$OUT/big" > "$OUT/publish-big-1.txt"
    t1=$(now)
    echo "publish $entries md5-cache entries ($(size "$OUT/big") B): $(secs "$t0" "$t1") s, repository $(size "$OUT/stratum/big.gah") B"
    entry=$(find "$OUT/big/repos/guru5/metadata/md5-cache" -type f | head -1)
    echo "# changed" >> "$entry"
    t0=$(now)
    "$BIN" --repo-dir "$OUT/stratum/big.gah" --name big.gah --keys "$OUT/keys" "$OUT/big" > "$OUT/publish-big-2.txt"
    t1=$(now)
    echo "republish after one entry changed: $(secs "$t0" "$t1") s: $(tail -1 "$OUT/publish-big-2.txt")"
fi
