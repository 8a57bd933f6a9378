#!/usr/bin/env bash
# The test suite, slow tests included (a VM boot under TCG, whole package builds in the
# sandbox). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUN_SLOW_TESTS=1
cargo build --release --workspace --bins --quiet
cargo test --release --workspace --no-fail-fast -- --test-threads=1
