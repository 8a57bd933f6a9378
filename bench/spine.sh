#!/usr/bin/env bash
# One configuration (app-arch/bzip2, default USE, gcc) four ways: VM boot to guest ready,
# the whole job in the VM (whichever accelerator works here), in the sandbox, and the same
# upstream build + test on the host without Portage. Prints a Markdown table for
# docs/BENCHMARKS.md. Run scripts/setup.sh first. Takes ~6 minutes under TCG.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/gah-bench-spine.XXXXXX)
trap 'status=$?; [ $status -eq 0 ] && rm -rf "$work" || echo "bench: failed, kept $work" >&2' EXIT

job="$work/job.json"
target/release/gah-workgen generate --repo vm-images/overlay --queue "$work/q" --strategy pairwise --t 1 >/dev/null 2>&1
cp "$(grep -L '": true' "$work"/q/pending/app-arch_bzip2-1.0.8-gcc-*.json | head -1)" "$job"

run_app() { # backend → prints "wall_s guest_s accel ready_s"
  local backend=$1 dir="$work/$1"
  mkdir -p "$dir"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$dir" && "$root/target/release/gah-app" --job "$job" --output "$dir/out.tar.gz" \
      --repo "$root/vm-images/overlay" --distfiles "$root/.cache/distfiles" \
      --binpkgs "$dir/binpkgs" --image "$root/.cache/images/test" --backend "$backend" >/dev/null 2>&1) \
    || { echo "bench: gah-app --backend $backend failed:" >&2; tail -5 "$dir/stderr.txt" >&2; return 1; }
  t1=$(date +%s.%N)
  python3 - "$dir" "$t0" "$t1" <<'PY'
import json, re, sys, tarfile
d, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
o = json.load(tarfile.open(f"{d}/out.tar.gz").extractfile("outcome.json"))
assert o["status"] == "success", o["summary"]
m = re.search(r"to=Running elapsed_s=([0-9.]+)", open(f"{d}/stderr.txt").read())
print(round(t1 - t0, 1), round(o["duration_secs"], 1), o["accelerator"], round(float(m.group(1)), 1) if m else "-")
PY
}

read -r vm_wall vm_guest vm_accel vm_ready < <(run_app vm)
read -r sb_wall sb_guest _ _ < <(run_app sandbox)

# The same upstream build and test on the host, without Portage: what isolation costs.
mkdir -p "$work/host" && tar -xzf .cache/distfiles/bzip2-1.0.8.tar.gz -C "$work/host"
t0=$(date +%s.%N)
make -s -C "$work/host/bzip2-1.0.8" -j"$(nproc)" CC=gcc >/dev/null 2>&1
make -s -C "$work/host/bzip2-1.0.8" test >/dev/null 2>&1
t1=$(date +%s.%N)
host=$(python3 -c "print(round($t1-$t0,1))")

cat <<TABLE
| measure (app-arch/bzip2-1.0.8, default USE, gcc) | seconds |
| --- | --- |
| VM: qemu start to guest agent running ($vm_accel) | ${vm_ready} |
| VM: job inside the guest ($vm_accel) | ${vm_guest} |
| VM: whole gah-app run ($vm_accel) | ${vm_wall} |
| sandbox: job inside the guest | ${sb_guest} |
| sandbox: whole gah-app run | ${sb_wall} |
| host: upstream \`make && make test\`, no Portage | ${host} |
TABLE
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
