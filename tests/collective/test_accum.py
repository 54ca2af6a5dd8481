"""--backward-passes-per-step K (local gradient accumulation), under real mpirun:
- equivalence after 30 updates (max |dw| <= 1e-6, h5py): mpirun -np 2 with
  K=2 x batch 25 (shm and overlap on; ring and overlap off) and 1 rank with
  K=4 x batch 25 against 1 rank x batch 100, the same seed and permutation;
  1 rank x batch 25 with K=1 is the control that must differ;
- --data-mode stream (2 epochs) and a TF_CONFIG chief + worker + 1 ps (the
  workers push after K micro-batches) likewise against their batch-100 runs;
- a step is an update: metrics.jsonl's step is 30 after 30 updates, run.json's
  config and the rank log say K; the timeline has each micro-batch's phases,
  the zeroing once and the update (and each layer's allreduce) once a step;
- the same seed and K give bit-identical weights (1 and 2 ranks);
- an exact resume with K=2 is bit-identical to the straight run; one with
  another K is a one-line error, exit 2;
- bad values, and K micro-batches that exceed the data: exit 2, one line."""
import json
import os
import sys

import numpy as np

import idxgen
import tfcluster as TC
import tfdtest as T

TOL = 1e-6
d = T.tmpdir()
rng = np.random.default_rng(23)
data = os.path.join(d, "data")
idxgen.write_shared_set(data, rng, rng.integers(0, 256, size=(10, 784)), 200, 3000, 200)


def train(name, extra, mpi=0, check_rc=True):
    out = os.path.join(d, name)
    p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs", out + "-logs",
               "--progress", "off", "--seed", "5", "--device", "cpu"] + extra, mpi=mpi,
              timeout=120)
    if check_rc:
        T.check(p.returncode == 0, f"{name}: exit {p.returncode}: {p.stderr.strip()[-600:]}")
    return p


def weights(name):
    return T.weights(os.path.join(d, name, "model", "model.h5"))


def one_line_error(p, *needles):
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    return (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("tfdist: error:")
            and all(n in lines[0] for n in needles))


# Equivalence: 30 updates of 100 samples each (3000 samples: one epoch).
short = ["--epochs", "1", "--max-steps", "30", "--learning-rate", "0.05", "--checkpoint-every", "0"]
runs = (("ref", 0, ["--batch-size", "100"]),
        ("k4", 0, ["--batch-size", "25", "--backward-passes-per-step", "4"]),
        ("k4b", 0, ["--batch-size", "25", "--backward-passes-per-step", "4"]),
        ("n2k2", 2, ["--batch-size", "25", "--backward-passes-per-step", "2", "--allreduce", "shm",
                     "--overlap", "on"]),
        ("n2k2b", 2, ["--batch-size", "25", "--backward-passes-per-step", "2", "--allreduce",
                      "shm", "--overlap", "on"]),
        ("n2k2ring", 2, ["--batch-size", "25", "--backward-passes-per-step", "2", "--allreduce",
                         "ring", "--overlap", "off"]),
        ("b25", 0, ["--batch-size", "25"]))
w = {}
for name, mpi, extra in runs:
    if train(name, short + extra, mpi=mpi).returncode == 0:
        w[name] = weights(name)
if not T.check(len(w) == len(runs), "equivalence: a run failed"):
    T.done()
T.check(np.any(w["ref"][5]), "the last bias is still zero: nothing was trained")
for name in ("k4", "n2k2", "n2k2ring"):
    diff = T.max_abs_diff(w["ref"], w[name])
    print(f"{name} vs 1 rank x 100 after 30 updates: max |dw| = {diff:.3g}")
    T.check(diff <= TOL, f"{name} differs from 1 rank x batch 100 by {diff:.3g} > {TOL}")
diff = T.max_abs_diff(w["ref"], w["b25"])
print(f"control: 1 rank x 25, K=1 vs 1 rank x 100: max |dw| = {diff:.3g}")
T.check(diff > 100 * TOL, f"control: batch 25 with K=1 is within {diff:.3g} of batch 100: "
        "the comparison cannot tell batches apart")
for a, b in (("k4", "k4b"), ("n2k2", "n2k2b")):
    same = T.bits_equal(w[a], w[b])
    print(f"{a} vs {b} (same seed, same K): {'bit-identical' if same else 'DIFFERENT'}")
    T.check(same, f"{a} vs {b}: same seed and K, other bits")

# The streaming loader gives K micro-batches a step, epoch after epoch.
stream = ["--epochs", "2", "--max-steps", "15", "--learning-rate", "0.05", "--checkpoint-every",
          "0", "--data-mode", "stream"]
if (train("s100", stream + ["--batch-size", "100"]).returncode == 0 and
        train("s25k4", stream + ["--batch-size", "25", "--backward-passes-per-step", "4"])
        .returncode == 0):
    diff = T.max_abs_diff(weights("s100"), weights("s25k4"))
    print(f"stream: K=4 x 25 vs batch 100 after 2 x 15 updates: max |dw| = {diff:.3g}")
    T.check(diff <= TOL, f"stream: K=4 x 25 differs from batch 100 by {diff:.3g} > {TOL}")

# Parameter servers: each worker pushes once per update, after K micro-batches.
ps_flags = short + ["--seed", "5", "--optimizer", "momentum", "--learning-rate", "0.01"]
rc, _, err = TC.run_plain(os.path.join(d, "ps-ref"), data, ps_flags + ["--batch-size", "100"])
c = TC.run_cluster(os.path.join(d, "ps"), TC.cluster_spec(1, 1, 1), TC.train_args(
    os.path.join(d, "ps"), data, ps_flags + ["--batch-size", "25", "--backward-passes-per-step", "2"]),
    limit_s=60)
if T.check(rc == 0 and all(t.rc == 0 for t in c.tasks), f"ps runs: plain rc {rc} {err[-300:]}; "
           f"cluster:\n{c.summary()}"):
    ref = TC.weights(os.path.join(d, "ps-ref", "outputs", "model", "model.h5"))
    got = TC.weights(os.path.join(d, "ps", "outputs", "model", "model.h5"))
    diff = TC.max_abs_diff(ref, got)
    print(f"chief+worker+1ps, K=2 x 25 vs 1 process x 100 (momentum): max |dw| = {diff:.3g}")
    T.check(diff <= TOL, f"ps: K=2 x 25 differs from batch 100 by {diff:.3g} > {TOL}")
    T.check(np.any(ref["dense_2/bias:0"]), "ps: the last bias is still zero")

# A step is an update; run.json and the rank log say K.
steps = {r["step"] for r in T.metrics(os.path.join(d, "k4")) if r["name"] == "loss"}
T.check(steps == {30}, f"k4: metrics step {steps}, want 30 updates")
run = json.load(open(os.path.join(d, "n2k2", "run.json")))
T.check(run["config"].get("backward_passes_per_step") == 2,
        f"run.json config: {run['config'].get('backward_passes_per_step')}")
log = open(os.path.join(d, "n2k2-logs", "rank-1.log")).read()
T.check("steps: 30 per epoch, each an update after 2 micro-batch(es) of 2 ranks x 25" in log,
        f"rank 1 log: no steps line: {log[-600:]}")

# The timeline: each micro-batch's phases, one zeroing and one update a step.
tl = ["--epochs", "1", "--max-steps", "6", "--batch-size", "20", "--first-layer-neurons", "24",
      "--second-layer-neurons", "12", "--backward-passes-per-step", "3", "--timeline", "on",
      "--checkpoint-every", "0"]
MICRO = ["data", "forward", "loss", "backward dense_2", "backward dense_1", "backward dense"]
for name, mpi in (("tl1", 0), ("tl2", 2)):
    extra = ["--allreduce", "ring", "--overlap", "on"] if mpi else []
    if train(name, tl + extra, mpi=mpi).returncode != 0:
        continue
    ev = json.load(open(os.path.join(d, name + "-logs", "timeline-0.json")))
    xs = [e for e in ev if e["ph"] == "X"]
    main = sorted((e for e in xs if e["tid"] == 0), key=lambda e: e["ts"])
    steps = [e for e in main if e["name"] == "step"]
    T.check(len(steps) == 6, f"{name}: {len(steps)} steps recorded, want 6")
    for s in steps:
        kids = [e["name"] for e in main if e is not s and e["ts"] >= s["ts"] - 0.002 and
                e["ts"] + e["dur"] <= s["ts"] + s["dur"] + 0.002 and not e["name"].startswith(
                    "allreduce dense")]
        want = MICRO[:3] + ["zero gradients"] + MICRO[3:] + MICRO * 2
        want += ["allreduce wait", "update"] if mpi else ["update"]
        T.check(kids == want, f"{name}: step at {s['ts']}: phases {kids}")
    if mpi:
        for layer in ("dense", "dense_1", "dense_2"):
            n = len([e for e in xs if e["name"] == "allreduce " + layer])
            T.check(n == 6, f"{name}: {n} reductions of {layer} for 6 updates of 3 micro-batches")

# Exact resume with K=2: bit-identical; another K: one line, exit 2.
ck = ["--batch-size", "50", "--backward-passes-per-step", "2", "--learning-rate", "0.05",
      "--max-steps", "10", "--checkpoint-every", "1"]
train("straight", ck + ["--epochs", "3"])
train("resumed", ck + ["--epochs", "2"])
if train("resumed", ck + ["--epochs", "3", "--resume-from", "latest"]).returncode == 0:
    T.check(T.bits_equal(weights("straight"), weights("resumed")),
            "resume with K=2: weights differ from the straight run's")
ckpt = os.path.join(d, "resumed", "checkpoints", "ckpt-epoch-2.h5")
for k in ("1", "3"):
    p = train("resumed", ck + ["--epochs", "3", "--resume-from", ckpt,
                               "--backward-passes-per-step", k], check_rc=False)
    T.check(one_line_error(p, f"--backward-passes-per-step is {k} but the checkpoint was "
                           "written with 2"), f"resume with K={k}: rc {p.returncode}, "
            f"stderr {p.stderr.strip()}")

# Bad values: usage errors naming the flag; more micro-batches than the data holds.
for bad in ("0", "-1", "1025", "abc", "2.5", ""):
    p = train("bad", short + ["--backward-passes-per-step", bad], check_rc=False)
    T.check(one_line_error(p, "--backward-passes-per-step"),
            f"--backward-passes-per-step {bad!r}: rc {p.returncode}, {p.stderr.strip()}")
p = train("toobig", short + ["--batch-size", "100", "--backward-passes-per-step", "31"],
          check_rc=False)
T.check(one_line_error(p, "--backward-passes-per-step 31", "3000 training samples"),
        f"K x batch beyond the data: rc {p.returncode}, {p.stderr.strip()}")
T.check(not os.path.exists(os.path.join(d, "toobig", "run.json")),
        "a rejected run wrote run.json")

T.done()
