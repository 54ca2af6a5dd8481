#!/usr/bin/env bash
# What Adam's update costs a training step: single-rank CPU, batch 50, 1 BLAS
# thread, `tfdist train --optimizer sgd` against `--optimizer adam` (constant
# rate), in alternating rounds so both see the same machine. Two measures:
# - cpu us/step: the process's user+system CPU time of a LONG-step run minus
#   that of a SHORT-step run (start-up, data loading and evaluation cancel),
#   over the step difference: robust on a shared, loaded machine, where a
#   process waits for a core but is not charged for the wait;
# - step_time_ms: the wall time per step of the long run, as metrics.jsonl
#   reports it (noisy under load).
# Usage: benchmarks/train/bench_opt.sh [BUILD_DIR] [ROUNDS] [LONG] [SHORT]
set -euo pipefail
case ${1:-} in -h | --help) sed -n '2,/^# Usage/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
build=${1:-build}
rounds=${2:-5}
long=${3:-1200}
short=${4:-200}
if [ ! -x "$build/cli/tfdist" ]; then
  echo "bench_opt: error: BUILD_DIR $build: no $build/cli/tfdist (build it: ninja -C $build)" >&2
  exit 2
fi
for n in "$rounds" "$long" "$short"; do
  case $n in '' | *[!0-9]* | 0) echo "bench_opt: error: '$n' is not a positive integer" >&2; exit 2 ;; esac
done
if [ "$long" -le "$short" ]; then echo "bench_opt: error: LONG $long must exceed SHORT $short" >&2; exit 2; fi
tfdist=$build/cli/tfdist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # opt steps -> "cpu_seconds step_time_ms"
  local lr=0.01
  [ "$1" = adam ] && lr=0.001
  /usr/bin/time -f "%U %S" -o "$tmp/t" "$tfdist" train --device cpu --threads 1 --batch-size 50 \
    --epochs 1 --max-steps "$2" --optimizer "$1" --learning-rate "$lr" --checkpoint-every 0 \
    --progress off --outputs "$tmp/$1" --logs "$tmp/l" >/dev/null
  local ms
  ms=$(/usr/bin/python3 -c "import json;print([json.loads(l)['value'] for l in open('$tmp/$1/metrics.jsonl') if '\"step_time_ms\"' in l][-1])")
  echo "$(awk '{print $1 + $2}' "$tmp/t") $ms"
}
rows=""
for i in $(seq "$rounds"); do
  for opt in sgd adam; do
    read -r cl ml <<<"$(run "$opt" "$long")"
    read -r cs _ <<<"$(run "$opt" "$short")"
    rows+="$opt $cl $cs $ml;"
  done
done
/usr/bin/python3 - "$rows" "$long" "$short" <<'PY'
import statistics, sys
long, short = int(sys.argv[2]), int(sys.argv[3])
cpu, wall = {"sgd": [], "adam": []}, {"sgd": [], "adam": []}
for row in sys.argv[1].strip(";").split(";"):
    opt, cl, cs, ml = row.split()
    cpu[opt].append((float(cl) - float(cs)) / (long - short) * 1e6)
    wall[opt].append(float(ml))
print(f"# single-rank CPU, batch 50, 1 BLAS thread; {long} - {short} steps; medians of",
      len(cpu["sgd"]), "alternating rounds")
for o in ("sgd", "adam"):
    print(f"{o:4s} cpu us/step  {statistics.median(cpu[o]):8.1f}   (rounds: "
          f"{', '.join(f'{x:.0f}' for x in cpu[o])})")
for o in ("sgd", "adam"):
    print(f"{o:4s} step_time_ms {statistics.median(wall[o]):8.3f}   (rounds: "
          f"{', '.join(f'{x:.3f}' for x in wall[o])})")
rc = statistics.median(cpu["adam"]) / statistics.median(cpu["sgd"])
rw = statistics.median(wall["adam"]) / statistics.median(wall["sgd"])
print(f"ratio adam/sgd, cpu time   {rc:6.3f}   (target <= 1.25)")
print(f"ratio adam/sgd, wall time  {rw:6.3f}")
PY
