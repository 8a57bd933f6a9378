#!/usr/bin/env bash
# gah serve under load: a database of 1,000,000 outcomes (about 32,000 ebuilds, 4 snapshots),
# 32 concurrent clients per page and API call (wrk), while a writer adds outcomes through the
# same write API the assimilator uses; p95 latency per URL and gah serve's peak memory.
# Results and method: docs/BENCHMARKS.md ("gah serve under load").
#
#   bash bench/serve-load.sh [OUTCOMES]        # default 1000000; the database is cached in
#                                              # .cache/bench/serve-<N>/ and reused
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
dir=".cache/bench/serve-$n"
cargo build --release -p gah --bin gah --quiet
cargo build --release -p gah-qa --example bench-db --quiet
bench_db=target/release/examples/bench-db
if [ ! -f "$dir/done" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  /usr/bin/time -f "generate: %e s, %M KiB" "$bench_db" generate "$dir/results.sqlite" --outcomes "$n"
  touch "$dir/done"
fi
# The writer works on a copy, so the cached database stays as generated.
work=$(mktemp -d /tmp/gah-serve-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$dir"/. "$work"/
db="$work/results.sqlite"
port=18080
target/release/gah serve --db "$db" --listen 127.0.0.1:$port --refresh-secs 5 > "$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 600); do grep -q "gah serve: http" "$work/serve.log" && break; sleep 0.5; done
grep -q "gah serve: http" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
base="http://127.0.0.1:$port"
"$bench_db" write "$db" --per-second 20 &
# A cell, a package and a dependency-blocked cell to ask for.
seq=$(curl -fsS "$base/api/search?status=build_failed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cells"][0]["seq"])')
pkg=$(curl -fsS "$base/api/cell/$seq" | python3 -c 'import json,sys; c=json.load(sys.stdin)["outcome"]["cpv"]; print(c.rsplit("-",1)[0])')
deps=$(curl -fsS "$base/api/search?status=deps_failed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cells"][0]["seq"])')
cat > "$work/p95.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("p50 %.1f ms  p95 %.1f ms  p99 %.1f ms  max %.1f ms  %d requests  %d errors\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA
printf '%-48s %s\n' "path (32 connections, 10 s each)" "latency"
for path in / "/package/$pkg" "/cell/$seq" "/cell/$deps/deps" "/search?q=pkg1" "/search?status=test_failed&compiler=clang" \
  /snapshots /feed.atom /api/overview "/api/package/$pkg" "/api/cell/$seq" "/api/cell/$deps/deps" "/api/search?use=ssl%20-doc" \
  /api/snapshots /api/changes /api/fails "/api/blame?page=2" "/cell/$seq/build.log"; do
  printf '%-48s ' "$path"
  wrk -t2 -c32 -d10s -s "$work/p95.lua" "$base$path" | tail -1
done
echo "gah serve peak memory: $(grep VmHWM /proc/$serve/status | awk '{print $2/1024 " MiB"}')"
echo "rows written meanwhile: $(( $(curl -fsS $base/api/overview | python3 -c 'import json,sys; print(json.load(sys.stdin)["outcomes"])') - n ))"
