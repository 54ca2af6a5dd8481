"""How long the training step waits on input: runs `tfdist train` on the CPU
in global mode (the prefetching loader over the in-memory set) and in stream
mode (shards read through the shuffle buffer), and prints data_wait_s as a
share of each epoch's time from metrics.jsonl. Target: under 2%.
Usage: /usr/bin/python3 benchmarks/data/train_wait.py [--tfdist PATH]
       [--data DIR] [--epochs N] [--np RANKS] [--shards K]"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=HelpFormat)
ap.add_argument("--tfdist", default="build/cli/tfdist")
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--np", type=int, default=1)
ap.add_argument("--shards", type=int, default=8)
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="tfdist-wait-")
shards = os.path.join(tmp, "shards")
subprocess.run([args.tfdist, "data", "shard", "--shards", str(args.shards), "--out", shards,
                args.data], check=True, capture_output=True)
worst = 0.0
print(f"# tfdist train, CPU, {args.np} rank(s), {args.epochs} epochs, batch 50: data_wait_s "
      "per epoch (rank 0)")
print(f"# {'mode':<8} {'epoch':>5} {'epoch_time_s':>12} {'data_wait_s':>11} {'wait%':>7}")
for mode, folder in (("global", args.data), ("stream", shards)):
    out = os.path.join(tmp, "out-" + mode)
    cmd = [args.tfdist, "train", "--device", "cpu", "--data-folder", folder, "--data-mode", mode,
           "--epochs", str(args.epochs), "--outputs", out, "--logs", os.path.join(tmp, "logs"),
           "--progress", "off"]
    if args.np > 1:
        cmd = ["mpirun", "-np", str(args.np), "--oversubscribe", "--bind-to", "none"] + cmd
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"train --data-mode {mode} failed: {p.stderr.strip()}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    by = {}
    for r in rows:
        by.setdefault(r["epoch"], {})[r["name"]] = r["value"]
    for epoch in sorted(e for e in by if "data_wait_s" in by[e]):
        t, w = by[epoch]["epoch_time_s"], by[epoch]["data_wait_s"]
        worst = max(worst, w / t)
        print(f"  {mode:<8} {epoch:>5} {t:>12.3f} {w:>11.4f} {100 * w / t:>6.2f}%")
shutil.rmtree(tmp)
print(f"# worst epoch: {100 * worst:.2f}% of the epoch waiting on input (target < 2%)")
