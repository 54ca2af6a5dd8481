#!/usr/bin/python3
"""Training throughput scaling of `tfdist train` under mpirun: samples/s and
scaling efficiency for N ranks, with gradient/backward overlap on and off.

Weak scaling, Horovod's convention: --batch-size is per rank, so N ranks
process N times the samples per step. Efficiency(N) = samples/s(N) /
(N * samples/s(1)). Each configuration runs --repeat times; the median
epoch throughput (rank 0's samples_per_s metric, which times the epoch's
steps only, not start-up or evaluation) is reported.

usage: train_scaling.py [--tfdist PATH] [--np 1,2,4] [--overlap on,off]
                        [--allreduce ring] [--batch-size 50] [--epochs 1]
                        [--max-steps 0] [--repeat 3] [--data-folder DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def run_one(args, np_, overlap, workdir):
    out = os.path.join(workdir, "outputs")
    cmd = ["timeout", "-k", "5", str(args.limit), "mpirun", "--oversubscribe", "--bind-to", "none",
           "-np", str(np_), args.tfdist, "train", "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--allreduce", args.allreduce,
           "--overlap", overlap, "--outputs", out, "--logs", os.path.join(workdir, "logs"),
           "--progress", "off", "--checkpoint-every", "0", "--max-steps", str(args.max_steps)]
    if args.data_folder:
        cmd += ["--data-folder", args.data_folder]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        sys.exit("train_scaling: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode,
                                                              p.stdout[-3000:]))
    return best_rate(out)


def best_rate(outputs):
    """The best epoch's samples_per_s in outputs/metrics.jsonl: later epochs are warm."""
    rates = []
    with open(os.path.join(outputs, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if m["name"] == "samples_per_s":
                rates.append(m["value"])
    if not rates:
        sys.exit("no samples_per_s in %s/metrics.jsonl" % outputs)
    return max(rates)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--tfdist", default=os.environ.get("TFDIST", os.path.join(
        HERE, "..", "..", "build", "cli", "tfdist")))
    ap.add_argument("--np", default="1,2,4")
    ap.add_argument("--overlap", default="on,off")
    ap.add_argument("--allreduce", default="ring", choices=["ring", "mpi"])
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-folder", default="")
    ap.add_argument("--limit", type=int, default=600, help="seconds per run before it is killed")
    args = ap.parse_args()
    nps = [int(x) for x in args.np.split(",")]
    overlaps = args.overlap.split(",")
    for o in overlaps:
        if o not in ("on", "off"):
            ap.error("--overlap: %r is not on or off" % o)
    cores = os.cpu_count()
    print("# tfdist training throughput: allreduce %s, batch %d per rank, %d epoch(s), "
          "max-steps %d, median of %d; %d core(s)" % (args.allreduce, args.batch_size, args.epochs,
                                                      args.max_steps, args.repeat, cores))
    print("# efficiency = samples/s(N) / (N * samples/s(N=1, same overlap))")
    print("# %5s %8s %14s %14s %10s" % ("ranks", "overlap", "samples/s", "per rank", "efficiency"))
    base = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Interleave configurations within each repeat so load drifts hit all alike.
        results = {(n, o): [] for n in nps for o in overlaps}
        for rep in range(args.repeat):
            for n in nps:
                for o in overlaps:
                    # progress on stderr: a whole benchmark takes minutes
                    print("[repeat %d/%d] %d rank(s), overlap %s" % (rep + 1, args.repeat, n, o),
                          file=sys.stderr, flush=True)
                    results[(n, o)].append(run_one(args, n, o, os.path.join(tmp, "r%d-%d-%s" % (rep, n, o))))
        for n in nps:
            for o in overlaps:
                rate = statistics.median(results[(n, o)])
                if n == 1:
                    base[o] = rate
                eff = rate / (n * base[o]) if o in base else float("nan")
                print("  %5d %8s %14.0f %14.0f %9.0f%%" % (n, o, rate, rate / n, 100 * eff))
    if cores is not None and max(nps) > cores:
        print("# note: %d ranks on %d cores are oversubscribed; efficiency above %d ranks "
              "measures sharing, not scaling" % (max(nps), cores, cores))


if __name__ == "__main__":
    main()
