#!/usr/bin/env bash
# What the sandbox hardening (issue 15) costs on the spine job: app-arch/bzip2-1.0.8, default
# USE, gcc, run whole through `gah-app --backend sandbox` with the hardened programs
# (target/release/gah-app and gah-agent) and with a base revision from before the hardening
# (BASE, default 6b6c59d: the parent of 11c649c, the first hardening commit). The two run
# alternately (hardened, base, hardened, base, ...) RUNS times each, every run in a fresh folder
# with an empty binary package folder, so both build the same things. Measures the whole
# gah-app run (wall clock) and the job inside the guest (the outcome's duration_secs); prints
# a Markdown table for docs/BENCHMARKS.md with the medians and the overhead of the hardened
# medians over the base ones, and says whether the whole run stays within 5 %.
#
#   [BASE=6b6c59d] [RUNS=5] bench/hardening-overhead.sh
#
# Needs scripts/setup.sh to have built the guest image and fetched the distfiles, and a
# sandbox-capable host. The base revision is checked out as a detached git worktree under
# .cache/bench/base-<rev> (reused when present) and built there with its own target folder
# (a first build takes some minutes); target/release is built only when a program is missing,
# and its programs are copied aside first, so a rebuild during the run changes nothing.
# Runs as root too (CI): the hardened sandbox then maps the guest's root onto host ids
# 0x7F000000.. through an idmapped mount of the image, which needs Linux 5.19+. About 20 s a
# run on 2 cores, plus the base build; run it on an idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:-6b6c59d}
runs=${RUNS:-5}
rev=$(git -C "$root" rev-parse --short=7 "$base^{commit}")
mkdir -p /tmp/gah-bench "$root/.cache/bench"
work=$(mktemp -d /tmp/gah-bench/hardening.XXXXXX)
trap 'status=$?; [ $status -eq 0 ] && rm -rf "$work" || echo "bench: failed, kept $work" >&2' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# The base: its own worktree and target folder, gah-agent beside gah-app as gah-app expects.
wt=$root/.cache/bench/base-$rev
if [ ! -e "$wt/.git" ]; then
  git -C "$root" worktree add --detach "$wt" "$rev" >/dev/null
fi
[ "$(git -C "$wt" rev-parse --short=7 HEAD)" = "$rev" ] || { echo "bench: $wt is not at $rev" >&2; exit 1; }
echo "bench: building base $rev in $wt (log $wt.build.log)" >&2
(cd "$wt" && CARGO_TARGET_DIR="$wt/target" cargo build --release --workspace --bins >"$wt.build.log" 2>&1) \
  || { echo "bench: base $rev does not build:" >&2; tail -20 "$wt.build.log" >&2; exit 1; }
base_bin=$wt/target/release

# The hardened programs: the working tree's release build, copied aside as they are now.
if [ ! -x "$root/target/release/gah-app" ] || [ ! -x "$root/target/release/gah-agent" ] || [ ! -x "$root/target/release/gah-workgen" ]; then
  echo "bench: building the working tree (release)" >&2
  (cd "$root" && cargo build --release --workspace --bins --quiet)
fi
hard_bin=$work/hardened
mkdir -p "$hard_bin"
cp "$root/target/release/gah-app" "$root/target/release/gah-agent" "$hard_bin/"
hard_desc="target/release of $(git -C "$root" rev-parse --short=7 HEAD)$(git -C "$root" diff --quiet HEAD || echo ' with uncommitted changes'), built $(date -r "$root/target/release/gah-app" '+%F %T')"

# The job: generated once, the same file for every run.
job=$work/job.json
"$root/target/release/gah-workgen" generate --repo "$root/vm-images/overlay" --queue "$work/q" --strategy pairwise --t 1 >/dev/null 2>&1
cp "$(grep -L '": true' "$work"/q/pending/app-arch_bzip2-1.0.8-gcc-*.json | head -1)" "$job"

one_run() { # label bin_dir i → appends "label i wall_s guest_s" to results
  local label=$1 bin=$2 i=$3 dir="$work/$1-$3" t0 t1
  mkdir -p "$dir/binpkgs"
  t0=$(date +%s.%N)
  (cd "$dir" && "$bin/gah-app" --job "$job" --output "$dir/out.tar.gz" \
      --repo "$root/vm-images/overlay" --distfiles "$root/.cache/distfiles" \
      --binpkgs "$dir/binpkgs" --image "$root/.cache/images/test" --backend sandbox >/dev/null 2>&1) \
    || { echo "bench: $label run $i: gah-app failed:" >&2; tail -5 "$dir/stderr.txt" >&2; return 1; }
  t1=$(date +%s.%N)
  python3 - "$label" "$i" "$dir" "$t0" "$t1" >>"$work/results" <<'PY'
import json, sys, tarfile
label, i, d, t0, t1 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
o = json.load(tarfile.open(f"{d}/out.tar.gz").extractfile("outcome.json"))
if o["status"] != "success":
    sys.exit(f"bench: {label} run {i}: {o['status']}: {o['summary']}")
print(label, i, round(t1 - t0, 2), round(o["duration_secs"], 2))
PY
  rm -rf "$dir/slot"   # the guest's upper layer: hundreds of MB a run
  echo "bench: $label run $i/$runs done" >&2
}

: >"$work/results"
for i in $(seq 1 "$runs"); do
  one_run hardened "$hard_bin" "$i"
  one_run base "$base_bin" "$i"
done

python3 - "$work/results" "$rev" "$hard_desc" "$runs" <<'PY'
import statistics, sys
path, rev, hard_desc, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [line.split() for line in open(path)]
name = {"hardened": "hardened", "base": f"base {rev}"}
med = {}
print("| run | programs | whole `gah-app` run (s) | job inside the guest (s) |")
print("| ---: | --- | ---: | ---: |")
for label, i, wall, guest in rows:
    print(f"| {i} | {name[label]} | {float(wall):.1f} | {float(guest):.1f} |")
for label in ("hardened", "base"):
    mine = [r for r in rows if r[0] == label]
    med[label] = (statistics.median(float(r[2]) for r in mine), statistics.median(float(r[3]) for r in mine))
    print(f"| median | {name[label]} | {med[label][0]:.2f} | {med[label][1]:.2f} |")
over = [100 * (h - b) / b for h, b in zip(med["hardened"], med["base"])]
print(f"| overhead | hardened over base, medians | {over[0]:+.1f} % | {over[1]:+.1f} % |")
print()
print(f"hardened: {hard_desc}; base: {rev}, built in its own worktree")
verdict = "within 5 %" if over[0] <= 5 else "NOT within 5 %"
print(f"overhead of the hardening on the whole gah-app run: {over[0]:+.1f} % (medians of {runs} runs each): {verdict}")
# The runs of one build spread by this much around their median: past 5 % the verdict says little.
spread = max(100 * (max(w) - min(w)) / statistics.median(w)
             for w in ([float(r[2]) for r in rows if r[0] == label] for label in ("hardened", "base")))
print(f"noise: the whole runs of one build spread by up to {spread:.0f} % of their median"
      + (" (more than the 5 % budget: rerun on an idle machine, or with more RUNS)" if spread > 5 else ""))
PY
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(id -un)," \
  "load $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
