#!/usr/bin/env bash
# What Adam's update costs a training step: single-rank CPU, batch 50, 1 BLAS
# thread, step_time_ms of `tfdist train --optimizer sgd` and `--optimizer
# adam` (constant rate), measured in alternating rounds so both see the same
# machine; the medians and their ratio (target <= 1.25).
# Usage: benchmarks/train/bench_opt.sh [BUILD_DIR] [ROUNDS] [STEPS]
set -euo pipefail
build=${1:-build}
rounds=${2:-5}
steps=${3:-600}
tfdist=$build/cli/tfdist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step_ms() {
  /usr/bin/python3 -c "import json;print([json.loads(l)['value'] for l in open('$1/metrics.jsonl') if '\"step_time_ms\"' in l][-1])"
}
declare -A ms=([sgd]="" [adam]="")
for i in $(seq "$rounds"); do
  for opt in sgd adam; do
    lr=0.01; [ "$opt" = adam ] && lr=0.001
    "$tfdist" train --device cpu --threads 1 --batch-size 50 --epochs 1 --max-steps "$steps" \
      --optimizer "$opt" --learning-rate "$lr" --checkpoint-every 0 --progress off \
      --outputs "$tmp/$opt" --logs "$tmp/l" >/dev/null
    ms[$opt]+="$(step_ms "$tmp/$opt") "
  done
done
/usr/bin/python3 - "${ms[sgd]}" "${ms[adam]}" "$steps" <<'PY'
import statistics, sys
s = [float(x) for x in sys.argv[1].split()]
a = [float(x) for x in sys.argv[2].split()]
ms, ma = statistics.median(s), statistics.median(a)
print(f"# single-rank CPU, batch 50, 1 BLAS thread, {sys.argv[3]} steps per run; medians of",
      len(s), "alternating rounds")
print(f"sgd  step_time_ms  {ms:8.3f}   (rounds: {', '.join(f'{x:.3f}' for x in s)})")
print(f"adam step_time_ms  {ma:8.3f}   (rounds: {', '.join(f'{x:.3f}' for x in a)})")
print(f"ratio adam/sgd     {ma / ms:8.3f}   (target <= 1.25)")
print(f"ratio of the minima {min(a) / min(s):7.3f}   (the rounds least disturbed by other load)")
PY
