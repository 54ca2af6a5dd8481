#!/usr/bin/env bash
# Single-rank CPU training throughput at batch 50 against the BLAS-only floor
# (bench_gemm_floor), measured alternately in one run so both see the same
# machine. Usage: benchmarks/train/bench_train.sh [BUILD_DIR] [ROUNDS]
# Also reports the peak RSS of a 20-epoch run against 3x (data + parameters),
# and what --timeline on (every step recorded) costs, in alternating rounds.
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
tfdist=$build/cli/tfdist
floor=$build/benchmarks/train/bench_gemm_floor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
best_sps() {
  /usr/bin/python3 -c "import json;v=[json.loads(l)['value'] for l in open('$1/metrics.jsonl') if '\"samples_per_s\"' in l];print(max(v))"
}
train_sps=() floor_sps=() tl_sps=()
for i in $(seq "$rounds"); do
  "$tfdist" train --epochs 2 --progress off --outputs "$tmp/o" --logs "$tmp/l" >/dev/null
  train_sps+=("$(best_sps "$tmp/o")")
  floor_sps+=("$("$floor" | awk '/floor_samples_per_s/ {print $2}')")
  "$tfdist" train --epochs 2 --progress off --outputs "$tmp/ot" --logs "$tmp/lt" \
    --timeline on --timeline-steps 0 >/dev/null
  tl_sps+=("$(best_sps "$tmp/ot")")
done
/usr/bin/python3 - "${train_sps[*]}" "${floor_sps[*]}" "${tl_sps[*]}" <<'PY'
import statistics, sys
t = [float(x) for x in sys.argv[1].split()]
f = [float(x) for x in sys.argv[2].split()]
mt, mf = statistics.median(t), statistics.median(f)
print("# single-rank CPU, batch 50, 1 BLAS thread; medians of", len(t), "alternating rounds")
print(f"train samples/s        {mt:10.0f}   (rounds: {', '.join(f'{x:.0f}' for x in t)})")
print(f"gemm floor samples/s   {mf:10.0f}   (rounds: {', '.join(f'{x:.0f}' for x in f)})")
print(f"ratio train/floor      {mt / mf:10.3f}   (target >= 0.85)")
tl = [float(x) for x in sys.argv[3].split()]
mtl = statistics.median(tl)
print(f"timeline on samples/s  {mtl:10.0f}   (rounds: {', '.join(f'{x:.0f}' for x in tl)})")
print(f"ratio timeline on/off  {mtl / mt:10.3f}   (every step recorded)")
PY
if [ "${TFDIST_BENCH_RSS:-1}" = 1 ]; then
  /usr/bin/time -f "%M" -o "$tmp/rss" "$tfdist" train --epochs 20 --progress off \
    --outputs "$tmp/o20" --logs "$tmp/l" >/dev/null
  /usr/bin/python3 - "$(cat "$tmp/rss")" <<'PY'
import sys
rss_mb = int(sys.argv[1]) / 1024
data_mb = (60000 + 10000) * (784 + 1) / 2**20
params_mb = 266610 * 4 / 2**20
print(f"peak RSS 20 epochs     {rss_mb:10.1f} MiB  (data {data_mb:.1f} + params {params_mb:.1f} MiB; "
      f"ratio {rss_mb / (data_mb + params_mb):.2f}x, target < 3x)")
PY
fi
