#!/bin/sh
# Validator + assimilator throughput on N generated outcome archives (issue 4: goal
# >= 2,000 results/s on 2 cores). In process, files on disk, fresh results database.
#
#   bench/assimilator-throughput.sh [N=10000] [THREADS=2]
set -eu
cd "$(dirname "$0")/.."
exec cargo run --release -q -p gah-assimilator --example throughput -- "${1:-10000}" "${2:-2}"
