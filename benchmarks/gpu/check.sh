#!/bin/bash
# The whole GPU check in one run (issues 6 and 7), from the repository root
# on a machine with an NVIDIA GPU, the driver and the CUDA libraries (e.g.
# PyTorch's wheels) but no Debian packages: everything else comes from the
# relocatable bundle made here by
#   launcher/bundle.sh --out .bundle/tfdist --tar .bundle/travel/tfdist.tar.xz \
#                      --data /usr/share/datasets/fashion-mnist .bundle/travel/fashion-mnist
# and carried along as .bundle/travel. Runs, each under its own time limit
# and never stopping at the first failure: the environment, the GPU step
# benchmark (the fused step, chained as the trainer runs it and one per
# launch, and op by op with the small-kernel and cuBLAS GEMMs side by side), the
# PyTorch peer (eager, CUDA graph), the GPU tests (the fused step also under
# compute-sanitizer's racecheck and synccheck), 20 epochs on the GPU with
# the defaults (fused) and op by op, the NCCL test of collective/ and the NCCL (1 rank, through
# collective/) and ring (2 ranks on the one GPU) allreduce benchmarks, 2-rank ring training on the GPU against the CPU,
# a TF_CONFIG chief + worker + ps cluster on the GPU against the same CPU run,
# and torch.compile last. Ends with a short table.
# Full logs go to $OUT (8 files at most). Exit status: the number of failed steps.
set -u
T0=$(date +%s.%N)
REPO=$(pwd)
OUT=${OUT:-/tmp/tfdist-check-out}
TRAVEL=${TFDIST_TRAVEL:-$REPO/.bundle/travel}
WORK=${TFDIST_CHECK_WORK:-/tmp/tfdist-check}
BUDGET_S=${TFDIST_CHECK_BUDGET_S:-240} # the last full run took 95 s before the sanitizer step
mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
RES=$OUT/results.jsonl
: > "$RES"
: > "$OUT/check.log"
export PYTHONUNBUFFERED=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
FAILED=0
LAST_RC=0

elapsed() { python3 -c "import time; print(round(time.time() - $T0, 1))" 2>/dev/null || echo 0; }
left() { python3 -c "import time; print(int($BUDGET_S - (time.time() - $T0)))" 2>/dev/null || echo 60; }

# run_step NAME LIMIT_S LOGNAME CMD...: time-limited, output to $OUT/LOGNAME
# and check.log, `JSON {...}` lines and the verdict to results.jsonl.
run_step() {
  local name=$1 limit=$2 logname=$3
  shift 3
  local room
  room=$(left)
  if [ "$room" -lt 15 ]; then
    echo "{\"step\":\"$name\",\"rc\":-1,\"secs\":0,\"note\":\"skipped: time budget spent\"}" >> "$RES"
    echo "=== $name: SKIPPED (time budget spent)" | tee -a "$OUT/check.log"
    FAILED=$((FAILED + 1))
    LAST_RC=-1
    return
  fi
  [ "$limit" -gt "$room" ] && limit=$room
  echo "=== $name (limit ${limit}s, at $(elapsed)s): $*" | tee -a "$OUT/check.log" >> "$OUT/$logname"
  local s e rc tmp
  tmp=$(mktemp)
  s=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$tmp" 2>&1
  rc=$?
  e=$(date +%s.%N)
  cat "$tmp" >> "$OUT/$logname"
  cat "$tmp" >> "$OUT/check.log"
  grep '^JSON ' "$tmp" | sed "s/^JSON /{\"step\":\"$name\",\"data\":/; s/\$/}/" >> "$RES"
  local secs
  secs=$(python3 -c "print(round($e - $s, 2))" 2>/dev/null || echo 0)
  echo "{\"step\":\"$name\",\"rc\":$rc,\"secs\":$secs}" >> "$RES"
  echo "=== $name: rc=$rc in ${secs}s" | tee -a "$OUT/check.log" >> "$OUT/$logname"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && FAILED=$((FAILED + 1))
  LAST_RC=$rc
  rm -f "$tmp"
  return 0
}

# --- the bundle and the data ------------------------------------------------------
if ! tar -xJf "$TRAVEL/tfdist.tar.xz" -C "$WORK" 2>> "$OUT/check.log"; then
  echo "cannot unpack $TRAVEL/tfdist.tar.xz: was .bundle/travel carried?" | tee -a "$OUT/check.log"
  exit 99
fi
B=$WORK/tfdist
DATA=$TRAVEL/fashion-mnist
echo "bundle $B, data $DATA, unpacked at $(elapsed)s" | tee -a "$OUT/check.log"

run_step env 30 env.txt bash -c "
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  nvidia-smi; uname -a; nproc; free -g | head -2
  '$B/bin/tfdist-env' --where
  TFDIST_BUNDLE_QUIET=1 '$B/bin/tfdist' --check-build
  python3 -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name())'
  ls -la '$DATA'"

# The chained fused step (several steps per launch, never run on a GPU
# before this check) first and briefly: when it fails or hangs, every later
# step runs one fused step per launch (TFDIST_FUSED_CHAIN=1, read by the CUDA
# backend), so the timings and the training still measure the fused step.
run_step fused_chain 30 tests.log "$B/bin/tfdist-env" test_gpu_step --fused-only
if [ "$LAST_RC" -ne 0 ] && [ "$LAST_RC" -ne 77 ]; then
  export TFDIST_FUSED_CHAIN=1
  echo "=== fused_chain failed: the rest runs one fused step per launch (TFDIST_FUSED_CHAIN=1)" \
    | tee -a "$OUT/check.log"
fi

# Timings first, while the machine is fresh; fp32 is the default math.
run_step step_bench 60 bench.log "$B/bin/tfdist-env" gpu_step_bench --device cuda
if [ "$LAST_RC" -ne 0 ] && [ "$LAST_RC" -ne 77 ] && [ -z "${TFDIST_FUSED_CHAIN:-}" ]; then
  # a chained launch may have left the process's context unusable: again, one step per launch
  run_step step_bench_chain1 60 bench.log env TFDIST_FUSED_CHAIN=1 "$B/bin/tfdist-env" \
    gpu_step_bench --device cuda
fi

# The PyTorch peer in the same run: eager and a whole-step CUDA graph.
run_step pytorch_peer 60 peer.log python3 "$REPO/benchmarks/peers/pytorch_mnist.py" \
  --device cuda --data-folder "$DATA" --modes eager,cudagraph --epochs 3 --train-mode eager

run_step test_gpu_ops 60 tests.log "$B/bin/tfdist-env" test_gpu_ops
run_step test_gpu_step 60 tests.log "$B/bin/tfdist-env" test_gpu_step
run_step test_gpu_train 90 tests.log env TFDIST="$B/bin/tfdist" MPIRUN="$B/bin/mpirun" \
  PYTHONPATH="$REPO/tests" TFDIST_BUNDLE_QUIET=1 python3 "$REPO/tests/gpu/test_gpu_train.py"

mkdir -p "$WORK/t20" "$WORK/r2g" "$WORK/r2c" "$WORK/psg"
run_step train20_gpu 60 train.log bash -c "cd '$WORK/t20' && '$B/bin/tfdist' train --device cuda \
  --data-folder '$DATA' --progress off --outputs '$WORK/t20/out' --logs '$WORK/t20/logs' && \
  python3 '$REPO/benchmarks/gpu/check_summary.py' --metrics '$WORK/t20/out/metrics.jsonl'"
mkdir -p "$WORK/t20o"
run_step train20_gpu_ops 40 train.log bash -c "cd '$WORK/t20o' && '$B/bin/tfdist' train --device cuda \
  --fused-step off --data-folder '$DATA' --progress off --outputs '$WORK/t20o/out' \
  --logs '$WORK/t20o/logs' && \
  python3 '$REPO/benchmarks/gpu/check_summary.py' --metrics '$WORK/t20o/out/metrics.jsonl'"
# NCCL through collective/ (collective/nccl.c): the exactness test, then the
# benchmark, both with one rank (NCCL refuses two ranks on one GPU).
run_step test_nccl 60 tests.log "$B/bin/tfdist-env" test_nccl_allreduce
run_step nccl_1rank 60 bench.log "$B/bin/tfdist-env" gpu_allreduce_bench --backend nccl -e 64M
run_step ring_2rank_1gpu 60 bench.log "$B/bin/mpirun" -np 2 --oversubscribe --bind-to none \
  "$B/bin/tfdist-env" gpu_allreduce_bench --backend ring -e 16M -n 10 -w 2

run_step ring2_gpu_train 60 train.log bash -c "cd '$WORK/r2g' && '$B/bin/mpirun' -np 2 \
  --oversubscribe --bind-to none '$B/bin/tfdist' train --device cuda --allreduce ring --epochs 2 \
  --data-folder '$DATA' --progress off --outputs '$WORK/r2g/out' --logs '$WORK/r2g/logs' && \
  python3 '$REPO/benchmarks/gpu/check_summary.py' --metrics '$WORK/r2g/out/metrics.jsonl'"
run_step ring2_cpu_train 60 train.log bash -c "cd '$WORK/r2c' && '$B/bin/mpirun' -np 2 \
  --oversubscribe --bind-to none '$B/bin/tfdist' train --device cpu --allreduce ring --epochs 2 \
  --threads 4 --data-folder '$DATA' --progress off --outputs '$WORK/r2c/out' \
  --logs '$WORK/r2c/logs' && \
  python3 '$REPO/benchmarks/gpu/check_summary.py' --metrics '$WORK/r2c/out/metrics.jsonl'"

# A TF_CONFIG cluster on the GPU, no mpirun: chief + worker + 1 ps (the
# parameter-server strategy, gradients staged through the host), against
# the 2-rank CPU run above.
run_step ps_gpu_train 60 train.log bash -c "cd '$WORK/psg' && python3 '$REPO/launcher/tfconfig-run' \
  --workers 1 --ps 1 --port 23456 --tfdist '$B/bin/tfdist' train --device cuda --epochs 2 \
  --data-folder '$DATA' --progress off --outputs '$WORK/psg/out' --logs '$WORK/psg/logs' && \
  python3 '$REPO/benchmarks/gpu/check_summary.py' --metrics '$WORK/psg/out/metrics.jsonl'"

# torch.compile last: Inductor may take a minute or more to compile.
run_step pytorch_compile 150 peer.log python3 "$REPO/benchmarks/peers/pytorch_mnist.py" \
  --device cuda --data-folder "$DATA" --modes compile

# Last, being the slowest: shared-memory races and barrier misuse in the
# fused step, chained too (exit 77 where the machine has no compute-sanitizer).
run_step sanitize_fused 90 tests.log bash -c "
  S=\$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null) ||
    { echo 'no compute-sanitizer'; exit 77; }
  for t in racecheck synccheck; do
    \"\$S\" --tool \$t --target-processes all --error-exitcode 1 \
      '$B/bin/tfdist-env' test_gpu_step --fused-only || exit 1
  done"
echo "=== done at $(elapsed)s; $FAILED step(s) failed" | tee -a "$OUT/check.log"
python3 "$REPO/benchmarks/gpu/check_summary.py" --results "$RES" --elapsed "$(elapsed)" \
  | tee "$OUT/summary.txt"
exit "$FAILED"
