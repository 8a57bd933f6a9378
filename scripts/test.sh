#!/usr/bin/env bash
# The test suite, slow tests included (VM boots under TCG, whole package builds, the real
# BOINC client). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUN_SLOW_TESTS=1
cargo build --release --workspace --bins --quiet

# Everything but the real BOINC client tests.
cargo test --release --workspace --no-fail-fast -- --test-threads=1 --skip real_boinc_client

# The real Debian boinc-client runs gah-app end to end on the VM backend (TCG here) ...
GAH_BOINC_BACKEND=vm cargo test --release -p gah-tests --test real_boinc_client -- \
  --test-threads=1 --exact real_boinc_client_runs_a_job_end_to_end
# ... and suspend/resume, kill/restart and abort on the sandbox backend: under TCG each VM
# variant takes 10+ minutes here, more than CI's budget allows for all three.
GAH_BOINC_BACKEND=sandbox cargo test --release -p gah-tests --test real_boinc_client -- \
  --test-threads=1 --skip real_boinc_client_runs_a_job_end_to_end real_boinc_client
