#!/usr/bin/env bash
# The test suite, slow tests included (VM boots under TCG, whole package builds, the real
# BOINC client). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUN_SLOW_TESTS=1

# Each phase runs even when an earlier one failed; the script fails if any did. Each phase's
# output is kept in .cache/test-logs/ too: a CI page shows only the last lines, so the end
# repeats, for each failed phase, which tests failed and the first lines of why.
failed=()
logs=.cache/test-logs
mkdir -p "$logs"
phase() {
  local name="$1"; shift
  echo "=== $name"
  "$@" 2>&1 | tee "$logs/${name//[^A-Za-z0-9]/_}.log" || failed+=("$name")
}
# At most a few lines per failed phase, each cut short: the last lines are what CI shows.
why_failed() {
  local log="$logs/${1//[^A-Za-z0-9]/_}.log"
  echo "--- $1: $log"
  { awk '/^failures:$/ { list = 1; next } list && /^    [^ ]+$/ { print "failed:" $0 } /^test result/ { list = 0 }' "$log" | sort -u | head -n 6
    grep -E '^error(\[E[0-9]+\])?:|^Diff in ' "$log" | head -n 4 || true
    grep -A 2 -E "panicked at" "$log" | grep -v -E '^--$' | head -n 9 || true; } | cut -c 1-400
}

# The habits first: they say in minutes what the rest would say after half an hour.
phase "cargo fmt --check" cargo fmt --all --check
phase "clippy -D warnings" cargo clippy --workspace --all-targets --quiet -- -D warnings
phase "tidy" cargo test --release -p gah-tests --test tidy

# The release programs the integration tests run.
cargo build --release --workspace --bins --quiet

# Everything but the real BOINC client tests.
phase "workspace tests" cargo test --release --workspace --no-fail-fast -- --test-threads=1 --skip real_boinc_client

# The real Debian boinc-client runs gah-app: end to end, suspend/resume, kill/restart and
# abort, first on the VM backend (TCG here: about 20 minutes for the four; the end-to-end
# and kill/restart jobs' disk comes from the data plane, the others' from the app version) ... The server-sent
# (signed) app version runs on the sandbox backend only: the vm flavour would add its 4 GiB
# disk's signing and gzip and another TCG job; it was run by hand on a real BOINC server
# (docs/DEPLOY.md). So does the validated dependency installed as a binary package (issue 11,
# item 4: three builds of bzip2/xz with jemalloc; the packages' path is the same in a VM).
GAH_BOINC_BACKEND=vm phase "real client, vm" cargo test --release -p gah-tests --test real_boinc_client -- \
  --test-threads=1 --nocapture real_boinc_client --skip server_sent --skip badly_signed --skip validated_dependency
# ... then on the sandbox backend, its root shipped as the app version's rootfs.tar (the
# end-to-end job's from the data plane's /base).
GAH_BOINC_BACKEND=sandbox phase "real client, sandbox" cargo test --release -p gah-tests --test real_boinc_client -- \
  --test-threads=1 --nocapture real_boinc_client

if [ ${#failed[@]} -gt 0 ]; then
  for name in "${failed[@]}"; do why_failed "$name" >&2; done
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all test phases passed"
