#!/usr/bin/env bash
# CPU training throughput at batch 50 per rank, everything measured side by
# side in one run, in alternating rounds (issue 16, part 5):
#   tfdist train --threads 1; tfdist train (defaults: --threads auto);
#   mpirun -np 2 tfdist train (defaults); the GEMM floor (bench_gemm_floor);
#   PyTorch 1 thread, 2 threads, and DDP (gloo) 2 ranks x 50.
# Also the whole op-by-op step on 1 thread as a median of step times
# (bench_threads), against the floor measured the same way.
# Prints medians, each ratio, a PASS/FAIL line per target, and the peak RSS
# of a 2-thread run against a 1-thread run.
# With TFDIST_BENCH_JSON=FILE.json it also writes the rows there and, where
# matplotlib is, the bar chart FILE.png beside it (plot_train.py).
# Usage: benchmarks/train/bench_train.sh [BUILD_DIR] [ROUNDS]
# Environment: TFDIST_BENCH_STEPS (steps per tfdist run and per peer timing,
# default 600); TFDIST_PEERS_VENV (a venv with torch; default
# BUILD_DIR/peers-venv, made with `pip install torch numpy` from PyPI when it
# has no torch; TFDIST_PEERS=0 skips the peers); TFDIST_BENCH_TIMELINE=1 also
# measures what --timeline on costs; TFDIST_DATA (default the Debian set).
# The exit status is 0 when every run ran (a FAIL target is not an error).
set -euo pipefail
case ${1:-} in -h | --help)
  sed -n '2,/^# The exit status/p' "$0" | sed 's/^# \{0,1\}//'
  exit 0 ;;
esac
build=${1:-build}
rounds=${2:-3}
if [ ! -x "$build/cli/tfdist" ]; then
  echo "bench_train: error: BUILD_DIR $build: no $build/cli/tfdist (build it: ninja -C $build)" >&2
  exit 2
fi
case $rounds in '' | *[!0-9]* | 0) echo "bench_train: error: ROUNDS '$rounds' is not a positive integer" >&2; exit 2 ;; esac
steps=${TFDIST_BENCH_STEPS:-600}
data=${TFDIST_DATA:-/usr/share/datasets/fashion-mnist}
here=$(cd "$(dirname "$0")" && pwd)
peers_dir=$here/../peers
tfdist=$build/cli/tfdist
floor=$build/benchmarks/train/bench_gemm_floor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mpirun="mpirun -np 2"
if [ "$(id -u)" = 0 ]; then mpirun+=" --allow-run-as-root"; fi

sps() { # the epoch's samples/s from metrics.jsonl
  /usr/bin/python3 -c "import json;v=[json.loads(l)['value'] for l in open('$1/metrics.jsonl') if '\"samples_per_s\"' in l];print(max(v))"
}
train() { # name, launcher words ("" for none), then train flags
  local name=$1 launch=$2
  shift 2
  $launch "$tfdist" train "$@" --data-folder "$data" --epochs 1 --max-steps "$steps" --checkpoint-every 0 \
    --progress off --device cpu --outputs "$tmp/$name" --logs "$tmp/$name-logs" >"$tmp/$name.out" 2>&1 ||
    { echo "bench_train: $name failed:" >&2; tail -5 "$tmp/$name.out" >&2; exit 1; }
  sps "$tmp/$name"
}

# The peers' venv: made once, from PyPI only.
py=""
if [ "${TFDIST_PEERS:-1}" = 1 ]; then
  venv=${TFDIST_PEERS_VENV:-$build/peers-venv}
  if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "# making $venv: pip install torch numpy (PyPI; a few GB) ..."
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch numpy; } >"$tmp/pip.log" 2>&1; then
      echo "# PyTorch peers skipped: pip install torch failed (tail of its log below)"
      tail -3 "$tmp/pip.log" | sed 's/^/#   /'
    fi
  fi
  "$venv/bin/python" -c "import torch, numpy" 2>/dev/null && py=$venv/bin/python
else
  echo "# PyTorch peers skipped: TFDIST_PEERS=0"
fi
peer() { # threads -> samples/s of eager steps
  "$py" "$peers_dir/pytorch_mnist.py" --device cpu --data-folder "$data" --threads "$1" \
    --modes eager --steps "$steps" --reps 3 2>/dev/null |
    /usr/bin/python3 -c "import json,sys
for l in sys.stdin:
    if l.startswith('JSON ') and '\"mode\": \"eager\"' in l: print(json.loads(l[5:])['samples_per_s'])"
}
ddp() { # 2 ranks x 50 over gloo -> global samples/s
  local port=$((20000 + RANDOM % 20000))
  "$py" "$peers_dir/pytorch_ddp.py" --rank 1 --world 2 --port $port --data-folder "$data" \
    --steps "$steps" --threads 1 >/dev/null 2>&1 &
  local other=$!
  "$py" "$peers_dir/pytorch_ddp.py" --rank 0 --world 2 --port $port --data-folder "$data" \
    --steps "$steps" --threads 1 2>/dev/null | sed -n 's/^JSON //p' |
    /usr/bin/python3 -c "import json,sys;print(json.loads(sys.stdin.read())['samples_per_s'])"
  wait $other
}

stepmed() { # bench_threads' median us of a whole op-by-op step, 1 thread -> samples/s
  "$build/benchmarks/train/bench_threads" -t 1 -r 3 -n 300 | awk '/step ops 1/ {print $5}'
}

names=(t1 auto np2 floor step1)
[ -n "$py" ] && names+=(torch1 torch2 ddp)
declare -A got
for name in "${names[@]}"; do got[$name]=""; done
for i in $(seq "$rounds"); do
  got[t1]+=" $(train t1 "" --threads 1)"
  got[auto]+=" $(train auto "")" # the defaults: --threads auto
  got[np2]+=" $(train np2 "$mpirun")"
  got[floor]+=" $("$floor" | awk '/floor_samples_per_s/ {print $2}')"
  got[step1]+=" $(stepmed)"
  if [ -n "$py" ]; then
    got[torch1]+=" $(peer 1)"
    got[torch2]+=" $(peer 2)"
    got[ddp]+=" $(ddp)"
  fi
done
threads_auto=$(/usr/bin/python3 -c "import json;t=json.load(open('$tmp/auto/run.json'))['threads'];print(f\"{t['count']} ({t['why']})\")")
load=$(cut -d' ' -f1-3 /proc/loadavg)
args=()
for name in "${names[@]}"; do args+=("$name=${got[$name]}"); done
BENCH_HERE=$here /usr/bin/python3 - "$rounds" "$steps" "$threads_auto" "$load" "$(nproc)" "${TFDIST_BENCH_JSON:-}" \
  "${args[@]}" <<'PY'
import json, os, statistics, sys
rounds, steps, threads_auto, load, cores, js = sys.argv[1:7]
v = {}
for a in sys.argv[7:]:
    k, s = a.split("=", 1)
    v[k] = [float(x) for x in s.split()]
m = {k: statistics.median(x) for k, x in v.items()}
label = {"t1": "tfdist train --threads 1", "auto": "tfdist train (defaults: threads auto)",
         "np2": "mpirun -np 2 tfdist train (defaults)", "floor": "GEMM floor, 1 thread (bench_gemm_floor)",
         "step1": "whole step, 1 thread (bench_threads)",
         "torch1": "PyTorch eager, 1 thread", "torch2": "PyTorch eager, 2 threads",
         "ddp": "PyTorch DDP gloo, 2 ranks x 50"}
print(f"# batch 50 per rank, {steps} steps per run, medians of {rounds} alternating rounds; "
      f"{cores} cores, load average at the end {load}")
print(f"# threads auto ran {threads_auto}")
print(f"# {'run':48s} {'samples/s':>10s} {'vs t1':>7s}   rounds")
for k in v:
    print(f"  {label[k]:48s} {m[k]:10.0f} {m[k] / m['t1']:7.2f}   " + ", ".join(f"{x:.0f}" for x in v[k]))
def target(name, ratio, op, want, pair=None):
    ok = ratio >= want if op == ">=" else ratio <= want
    # Each round runs the rows back to back, so a round's own ratio cancels the
    # machine's slower drifts; shown beside the verdict, which stays the ratio of medians.
    paired = ""
    if pair:
        r = [a / b for a, b in zip(v[pair[0]], v[pair[1]])]
        paired = (f"; per round {', '.join(f'{x:.2f}' for x in r)}, "
                  f"median {statistics.median(r):.2f}")
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {ratio:.2f} (target {op} {want}){paired}")
target("train defaults (threads auto) / --threads 1", m["auto"] / m["t1"], ">=", 1.6, ("auto", "t1"))
target("mpirun -np 2 defaults / --threads 1", m["np2"] / m["t1"], ">=", 1.7, ("np2", "t1"))
target("--threads 1 / its GEMM floor", m["t1"] / m["floor"], ">=", 0.85, ("t1", "floor"))
# Both per-step medians: a busy machine's preemptions, which the floor's median drops and an
# epoch's wall clock keeps, do not count against the step here.
target("whole step / GEMM floor, both medians of step times", m["step1"] / m["floor"], ">=", 0.85)
if "ddp" in m:
    target("mpirun -np 2 / PyTorch DDP 2x50", m["np2"] / m["ddp"], ">=", 5.5, ("np2", "ddp"))
    target("train defaults (threads auto) / PyTorch 2 threads", m["auto"] / m["torch2"], ">=", 2.8,
           ("auto", "torch2"))
else:
    print("SKIP  the PyTorch targets: no peers")
if js:
    doc = {"batch": 50, "steps": int(steps), "rounds": int(rounds), "cores": int(cores),
           "load": load, "threads_auto": threads_auto,
           "rows": [{"key": k, "label": label[k], "samples_per_s": m[k], "rounds": v[k]}
                    for k in v]}
    sys.path.insert(0, os.path.join(os.environ["BENCH_HERE"], ".."))
    import plotlib  # its write_atomic: mkstemp beside it, never through a link, fsync, rename
    plotlib.write_atomic(js, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    print(f"# wrote {js}")
PY
if [ -n "${TFDIST_BENCH_JSON:-}" ] && /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 "$here/plot_train.py" "$TFDIST_BENCH_JSON" | sed 's/^/# wrote /'
fi

# Peak RSS: the same 1-epoch run with 2 threads and with 1.
for th in 1 2; do
  /usr/bin/time -f "%M" -o "$tmp/rss$th" "$tfdist" train --data-folder "$data" --epochs 1 \
    --threads $th --checkpoint-every 0 --progress off --device cpu --outputs "$tmp/rss-o$th" \
    --logs "$tmp/rss-l$th" >/dev/null
done
/usr/bin/python3 - "$(cat "$tmp/rss1")" "$(cat "$tmp/rss2")" <<'PY'
import sys
a, b = int(sys.argv[1]) / 1024, int(sys.argv[2]) / 1024
print(f"peak RSS, 1 epoch: 1 thread {a:.1f} MiB, 2 threads {b:.1f} MiB")
print(f"{'PASS' if b <= 1.2 * a else 'FAIL'}  peak RSS 2 threads / 1 thread: {b / a:.2f} (target <= 1.2)")
data_mb = (60000 + 10000) * (784 + 1) / 2**20
params_mb = 266610 * 4 / 2**20
print(f"{'PASS' if a < 3 * (data_mb + params_mb) else 'FAIL'}  peak RSS 1 thread / (data {data_mb:.1f} + "
      f"params {params_mb:.1f} MiB): {a / (data_mb + params_mb):.2f} (target < 3)")
PY

if [ "${TFDIST_BENCH_TIMELINE:-0}" = 1 ]; then
  off=() on=()
  for i in $(seq "$rounds"); do
    off+=("$(train tl-off "")")
    on+=("$(train tl-on "" --timeline on --timeline-steps 0)")
  done
  /usr/bin/python3 -c "import statistics as s,sys;a=[float(x) for x in sys.argv[1].split()];b=[float(x) for x in sys.argv[2].split()];print(f'timeline on / off (every step recorded): {s.median(b)/s.median(a):.3f}')" "${off[*]}" "${on[*]}"
fi
