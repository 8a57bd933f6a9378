#!/bin/sh
# Validator + assimilator throughput on N generated outcome archives (issue 4: goal
# >= 2,000 results/s on 2 cores). In process, files on disk, fresh results databases:
# validator init and compare on THREADS threads, the single-outcome assimilator (3 fsyncs
# per outcome) on the first SINGLE archives, the batched assimilator and the
# `gah-assimilator --batch` binary on all of them.
#
#   bench/assimilator-throughput.sh [N=10000] [THREADS=2] [SINGLE=2000]
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p gah-assimilator --bins --examples
exec target/release/examples/throughput "${1:-10000}" "${2:-2}" "${3:-2000}"
