#!/usr/bin/env bash
# Overhead of VM checkpointing on one whole job: runs the same job under the vm backend
# without checkpoints (--checkpoint-secs 0) and with one every PERIOD seconds, alternating,
# RUNS times each, and prints wall time, guest build time, checkpoints taken, their size and
# duration. (Without a client, BOINC's runtime itself asks for a checkpoint every 300 s.)
#
#   bench/checkpoint-overhead.sh [JOB.json] [PERIOD] [RUNS] [both|none|periodic]
#
# Default job: libffi 3.6.0, default USE, gcc (about 6 minutes under TCG here, so a
# 5-minute period takes one checkpoint). Run it on an idle machine; results and method
# go in docs/BENCHMARKS.md. Needs scripts/setup.sh to have built the image and distfiles.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
period=${2:-300}
runs=${3:-1}
which=${4:-both}
work=$(mktemp -d "${TMPDIR:-/tmp}/gah-ckpt-bench.XXXXXX")
job=${1:-}
if [ -z "$job" ]; then
    job=$work/job.json
    cat > "$job" <<'JSON'
{
  "format": 1,
  "job_id": "dev-libs_libffi-3.6.0-gcc-395fa89352c5",
  "repo": "gah",
  "cpv": "dev-libs/libffi-3.6.0",
  "use": {"debug": false, "exec-static-trampoline": false, "pax-kernel": false,
          "raw-api": false, "static-libs": false},
  "compiler": "gcc",
  "timeout_secs": 7200
}
JSON
fi
echo "job $(basename "$job"), period ${period}s, $runs run(s) each, work folder $work"

one_run() { # $1 = label, $2 = checkpoint period
    local dir=$work/$1 start end
    mkdir -p "$dir"
    start=$(date +%s.%N)
    (cd "$dir" && "$root/target/release/gah-app" --job "$job" --output "$dir/out.tar.gz" \
        --repo "$root/vm-images/overlay" --distfiles "$root/.cache/distfiles" \
        --binpkgs "$dir/binpkgs" --image "$root/.cache/images/test" --backend vm \
        --checkpoint-secs "$2" 2>"$dir/stderr.txt" >/dev/null) || true
    end=$(date +%s.%N)
    python3 - "$1" "$dir" "$start" "$end" <<'PY'
import json, re, sys, tarfile
label, d, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
o = json.load(tarfile.open(f"{d}/out.tar.gz").extractfile("outcome.json"))
ck = re.findall(r"checkpoint committed layer=\d+ bytes=(\d+) seconds=([\d.]+)", open(f"{d}/stderr.txt").read())
sizes = ", ".join(f"{int(b)/1e6:.0f} MB in {float(s):.1f} s" for b, s in ck) or "-"
print(f"{label:>14}: wall {end-start:7.1f} s  guest {o['duration_secs']:7.1f} s  {o['status']:<12} checkpoints {len(ck)} ({sizes})")
PY
}

for i in $(seq 1 "$runs"); do
    [ "$which" = periodic ] || one_run "none-$i" 0
    [ "$which" = none ] || one_run "every${period}s-$i" "$period"
done
