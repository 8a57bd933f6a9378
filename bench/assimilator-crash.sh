#!/bin/sh
# Crash test for gah-assimilator (issue 4): SIGKILLs the assimilator at random points while
# it stores N outcome archives (default 1000), re-runs it as BOINC's script_assimilator
# would, then proves 0 lost and 0 duplicated rows, an intact SQLite file and log store.
#
#   bench/assimilator-crash.sh [N] [SEED]
#
# Prints one line: "crash test: N outcomes, ... SIGKILLs ...: 0 lost, 0 duplicated, ...".
set -eu
cd "$(dirname "$0")/.."
export GAH_CRASH_OUTCOMES="${1:-1000}"
if [ -n "${2:-}" ]; then export GAH_CRASH_SEED="$2"; fi
exec cargo test --release -p gah-assimilator --test crash -- --nocapture --test-threads=1
