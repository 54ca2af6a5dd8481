"""--threads (the CPU back end's team): 1 rank x batch 100 after 30 steps
gives the weights of 1 thread with 2, 3 and 4 threads, and so do 2 ranks x
batch 50 with 2 threads each (max |dw| <= 1e-6: compared early, a ReLU net
is chaotic); the same seed and
threads give bit-identical weights; an exact resume with --threads 2 is
bit-identical and one with another count is a one-line error; run.json, the
rank log and --check-build say how many threads run and why, and the rank
log whether they outnumber the node's cores (1 rank; 2 MPI ranks; a
TF_CONFIG chief, worker and ps on this host); bad values are usage errors."""
import json
import os
import re
import sys

import numpy as np

import idxgen
import tfdtest as T

TOL = 1e-6
d = T.tmpdir()
rng = np.random.default_rng(16)
data = os.path.join(d, "data")
idxgen.write_shared_set(data, rng, rng.integers(0, 256, size=(10, 784)), 200, 3000, 200)


def train(out, extra, check_rc=True):
    p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs", out + "-logs",
               "--progress", "off", "--seed", "3", "--device", "cpu"] + extra)
    if check_rc:
        T.check(p.returncode == 0, f"{out}: exit {p.returncode}: {p.stderr.strip()[-600:]}")
    return p


def weights(out):
    return T.weights(os.path.join(out, "model", "model.h5"))


# Equivalence and determinism: 30 steps of batch 100, the model's own sizes.
short = ["--epochs", "1", "--max-steps", "30", "--batch-size", "100", "--learning-rate", "0.05",
         "--checkpoint-every", "0"]
w = {}
runs = (("t1", 1), ("t2", 2), ("t4", 4), ("t2b", 2), ("t3", 3), ("t3b", 3))
for name, th in runs:
    out = os.path.join(d, name)
    if train(out, short + ["--threads", str(th)]).returncode == 0:
        w[name] = weights(out)
        # one rank: its threads outnumber the cores of its affinity mask, or not
        over = th > len(os.sched_getaffinity(0))
        log0 = open(os.path.join(out + "-logs", "rank-0.log")).read()
        T.check(("more threads on this node than usable cores" in log0) == over,
                f"{name} log: oversubscription ({over}) not said right: {log0[-400:]}")
# 2 ranks x batch 50 with 2 threads each (oversubscribed on 2 cores: the
# math, not the speed), the default allreduce (shm on one host), against
# 1 rank x batch 100 with 1 thread.
np2 = os.path.join(d, "np2t2")
half = [a if a != "100" else "50" for a in short]
p = T.run(["train", "--data-folder", data, "--outputs", np2, "--logs", np2 + "-logs", "--progress",
           "off", "--seed", "3", "--device", "cpu", "--threads", "2"] + half, mpi=2)
np2_allreduce = "?"
if T.check(p.returncode == 0, f"mpirun -np 2 --threads 2: exit {p.returncode}: {p.stderr.strip()[-600:]}"):
    w["np2t2"] = weights(np2)
    np2_run = json.load(open(os.path.join(np2, "run.json")))
    np2_allreduce = np2_run.get("allreduce")
    T.check(np2_allreduce == "shm", f"np2t2: the default allreduce on one host is {np2_allreduce}, not shm")
    T.check(np2_run.get("threads", {}).get("count") == 2, f"np2t2 run.json threads: {np2_run.get('threads')}")
    log1 = open(os.path.join(np2 + "-logs", "rank-1.log")).read()
    T.check(re.search(r"threads: 2 \(--threads 2\)", log1) is not None,
            f"np2t2 rank 1 log: no threads line: {log1[-400:]}")
    over = 4 > len(os.sched_getaffinity(0))  # 2 ranks x 2 threads on fewer than 4 cores
    T.check(("more threads on this node than usable cores" in log1) == over,
            f"np2t2 rank 1 log: oversubscription ({over}) not said right: {log1[-400:]}")
if T.check(len(w) == len(runs) + 1, "equivalence: a run failed"):
    T.check(np.any(w["t1"][5]), "equivalence: the last bias is still zero: nothing was trained")
    for name in ("t2", "t4", "t3"):
        diff = T.max_abs_diff(w["t1"], w[name])
        print(f"{name} vs t1 after 30 steps: max |dw| = {diff:.3g}")
        T.check(diff <= TOL, f"{name} differs from 1 thread by {diff:.3g} > {TOL}")
    if "np2t2" in w:
        diff = T.max_abs_diff(w["t1"], w["np2t2"])
        print(f"2 ranks x 50, 2 threads each ({np2_allreduce}) vs 1 rank x 100, 1 thread, "
              f"after 30 steps: max |dw| = {diff:.3g}")
        T.check(diff <= TOL, f"2 ranks x 2 threads differ from 1 rank x 1 thread by {diff:.3g} > {TOL}")
    for a, b in (("t2", "t2b"), ("t3", "t3b")):
        same = T.bits_equal(w[a], w[b])
        print(f"{a} vs {b} (same seed, same threads): {'bit-identical' if same else 'DIFFERENT'}")
        T.check(same, f"{a} vs {b}: same seed and threads, other bits")

# What runs and why: the rank log, run.json, --check-build.
log = open(os.path.join(d, "t2-logs", "rank-0.log")).read()
T.check(re.search(r"threads: 2 \(--threads 2\)", log) is not None, f"rank log: no threads line: {log[-400:]}")
T.check(re.search(r"step: fused.*\n.*threads: fused step: rows of the batch", log) is not None,
        f"rank log: 1 rank with 2 threads should run the fused step and say how it splits: {log[-600:]}")
run = json.load(open(os.path.join(d, "t2", "run.json")))
T.check(run.get("threads", {}).get("count") == 2 and run["threads"].get("why") == "--threads 2"
        and run["threads"].get("how", "").startswith("fused step: rows of the batch"),
        f"run.json threads: {run.get('threads')}")
T.check(run["config"]["threads"] == 2, f"run.json config threads: {run['config'].get('threads')}")
auto = os.path.join(d, "auto")
if train(auto, short + ["--threads", "auto"]).returncode == 0:
    w["auto"] = weights(auto)
    run = json.load(open(os.path.join(auto, "run.json")))
    th = run.get("threads", {})
    cores = len(os.sched_getaffinity(0))
    T.check(th.get("count") == max(cores, 1) and th.get("why", "").startswith("auto: "),
            f"--threads auto on {cores} cores, 1 rank: run.json says {th}")
    T.check(run["config"]["threads"] == "auto", f"run.json config keeps auto: {run['config'].get('threads')}")
    cfg = os.path.join(d, "auto-config.json")  # run.json's config reruns the job: auto stays auto
    json.dump(run["config"], open(cfg, "w"))
    again = os.path.join(d, "auto-again")
    if train(again, ["--config", cfg, "--outputs", again, "--logs", again + "-logs"]).returncode == 0:
        T.check(json.load(open(os.path.join(again, "run.json")))["threads"] == th,
                "--config of run.json's config: threads resolved otherwise")
# No flag is --threads auto: the same count, why and bits as the auto run.
dflt = os.path.join(d, "default")
if train(dflt, short).returncode == 0 and "auto" in w:
    run = json.load(open(os.path.join(dflt, "run.json")))
    T.check(run.get("threads") == json.load(open(os.path.join(auto, "run.json"))).get("threads")
            and run["config"]["threads"] == "auto", f"default threads: run.json says {run.get('threads')}")
    T.check(T.bits_equal(weights(dflt), w["auto"]), "default threads: weights differ from --threads auto's")
p = T.run(["--check-build"])
T.check(p.returncode == 0 and re.search(r"CPU threads +--threads auto \(the default\) runs \d+ per rank here \(auto: ", p.stdout),
        f"--check-build: no threads line: {p.stdout}")

# Exact resume with --threads 2; another count is a one-line error.
ck = ["--batch-size", "50", "--learning-rate", "0.05", "--max-steps", "20", "--checkpoint-every", "1"]
straight, resumed = os.path.join(d, "straight"), os.path.join(d, "resumed")
train(straight, ck + ["--epochs", "3", "--threads", "2"])
train(resumed, ck + ["--epochs", "2", "--threads", "2"])
p = train(resumed, ck + ["--epochs", "3", "--threads", "2", "--resume-from", "latest"])
if p.returncode == 0:
    T.check(T.bits_equal(weights(straight), weights(resumed)),
            "resume with --threads 2: weights differ from the straight run's")
p = train(resumed, ck + ["--epochs", "3", "--threads", "1", "--resume-from",
                         os.path.join(resumed, "checkpoints", "ckpt-epoch-2.h5")], check_rc=False)
lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
T.check(p.returncode != 0 and len(lines) == 1 and lines[0].startswith("tfdist: error:") and
        "--threads is 1 but the checkpoint was written with 2" in lines[0],
        f"resume with another thread count: rc {p.returncode}, stderr {p.stderr.strip()}")

# A checkpoint of more threads than auto runs here: resuming with the default
# (auto) names the count it needs.
here = len(os.sched_getaffinity(0))
odd = os.path.join(d, "odd")
train(odd, ck + ["--epochs", "1", "--threads", str(here + 1)])
p = train(odd, ck + ["--epochs", "2", "--resume-from", "latest"], check_rc=False)
lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
T.check(p.returncode != 0 and len(lines) == 1 and
        f"--threads auto runs {here} but the checkpoint was written with {here + 1}" in lines[0] and
        lines[0].endswith(f"pass --threads {here + 1}"),
        f"auto resume of a {here + 1}-thread checkpoint: rc {p.returncode}, stderr {p.stderr.strip()}")

# A TF_CONFIG cluster on this host (chief, worker and a ps, --threads auto):
# each training task divides the cores by the 2 training tasks on its host
# (the ps, which runs no team, is not one) and says oversubscription iff
# they outnumber them.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "collective"))
import tfcluster as TC  # noqa: E402

tfd = os.path.join(d, "tfconfig")
c = TC.run_cluster(tfd, TC.cluster_spec(chief=1, worker=1, ps=1),
                   TC.train_args(tfd, data, ["--epochs", "1", "--max-steps", "5"]), limit_s=60)
if T.check(all(t.rc == 0 for t in c.tasks), f"TF_CONFIG cluster: a task failed:\n{c.summary()}"):
    cores = len(os.sched_getaffinity(0))
    per = max(cores // 2, 1)
    for r in (0, 1):
        log = open(os.path.join(tfd, "logs", f"rank-{r}.log")).read()
        T.check(f"threads: {per} (auto: {cores} usable cores (sched_getaffinity) / 2 ranks on this "
                "node)" in log and ("more threads on this node than usable cores" in log) ==
                (per * 2 > cores), f"TF_CONFIG rank {r}: threads line: {log[-600:]}")

# Bad values: usage errors naming the flag.
for bad in ("0", "abc", "1025", "-2"):
    p = train(os.path.join(d, "bad"), short + ["--threads", bad], check_rc=False)
    T.check(p.returncode == 2 and "--threads" in p.stderr, f"--threads {bad}: rc {p.returncode}, {p.stderr.strip()}")

T.done()
