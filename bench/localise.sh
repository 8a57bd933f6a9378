#!/bin/sh
# Failure localisation benchmark (issue 13): on models from real md5-cache entries (10 to 60
# flags, non-empty REQUIRED_USE) with injected deterministic faults of 1 to 3 flag values
# (a quarter with the compiler too), the share localised correctly and the follow-up jobs per
# failure of gah-localise against one-flag-at-a-time and plain ddmin, starting from the
# pairwise covering array's outcomes. Prints a Markdown table; results go to
# docs/BENCHMARKS.md by hand. Pure computation: no builds, no VM, seconds.
#
# Usage: bench/localise.sh [PER_MODEL] [SEED] [-- extra options of the example, e.g. --flags 61-400]
# Needs: /work/shared/data/md5-cache (or DATA=...).
set -eu
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/shared/data/md5-cache}
PER_MODEL=${1:-12}
SEED=${2:-1}
[ $# -ge 2 ] && shift 2 || shift $#
[ "${1:-}" = "--" ] && shift
nice -n 10 cargo build --release -q -p gah-localise --example bench -j1
target/release/examples/bench --per-model "$PER_MODEL" --seed "$SEED" "$@" "$DATA/guru" "$DATA/funtoo-core-kit"
