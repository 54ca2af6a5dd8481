"""Training under TF_CONFIG (SPEC "TF_CONFIG"), each task a plain process on
127.0.0.1, no mpirun. Oracles are runs without TF_CONFIG, read with h5py:

- ring allreduce (no ps): chief + 1 worker, batch B each, ends within
  max |dw| <= 1e-5 of the 1-process run with batch 2B after 1 epoch, and of
  `mpirun -np 2` with batch B; 2 workers and no chief (worker 0 does the
  chief's duties) likewise; chief + 2 workers against the 1-process 3B run;
- parameter servers: chief + 1 worker with 1 ps and with 2 ps (SGD), against
  the same 1-process 2B run; with 2 ps and --optimizer momentum against the
  1-process momentum run (the epoch-1 checkpoint);
- resume of a finished run with ps (its epoch-2 checkpoint, no step left):
  every task exits 0 and the model equals the run's own.
- resume with ps: that momentum run (2 epochs, --checkpoint-every 1) resumed
  from its epoch-1 checkpoint by a fresh cluster ends within 1e-5 of it;
- files: only outputs/ of rank 0 (metrics.jsonl with each epoch once,
  run.json Completed, model.h5), logs/rank-<r>.log per training rank,
  logs/ps-<i>.log per ps; every task exits 0;
- TF_CONFIG set but empty is a plain run: bit-identical to the run without it.
The oracle is sharp: the 2B and 3B single-process runs differ by far more
than the tolerance."""
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import tfcluster as TC

B = 10
TOL = 1e-5
LIMIT_S = 45  # per cluster run; a run is ~1-2 s when it works
SGD = ["--seed", "7", "--learning-rate", "0.05"]
MOM = ["--seed", "7", "--learning-rate", "0.01", "--optimizer", "momentum"]


def model_path(folder):
    return os.path.join(folder, "outputs", "model", "model.h5")


def plain(C, tmp, data, name, extra):
    folder = os.path.join(tmp, name)
    rc, out, err = TC.run_plain(folder, data, extra)
    if not C.check(rc == 0, "%s (oracle, no TF_CONFIG): exit %s" % (name, rc), err[-1500:]):
        return None
    w, why = TC.try_weights(model_path(folder))
    C.check(w is not None, "%s (oracle): %s" % (name, why))
    return w


def lines_of(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError) as e:
        return e


def check_files(C, name, c, ranks, n_ps, epochs):
    """rank 0's outputs, each rank's and each ps's log."""
    logs = os.path.join(c.folder, "logs")
    have = sorted(os.listdir(logs)) if os.path.isdir(logs) else []
    want = ["rank-%d.log" % r for r in range(ranks)] + ["ps-%d.log" % i for i in range(n_ps)]
    C.check(all(w in have for w in want), "%s: logs/ has %s, want %s" % (name, have, want))
    extra = [h for h in have if h.startswith(("rank-", "ps-")) and h not in want]
    C.check(not extra, "%s: logs/ has logs of tasks that do not exist: %s" % (name, extra))
    out = os.path.join(c.folder, "outputs")
    rows = lines_of(os.path.join(out, "metrics.jsonl"))
    if C.check(isinstance(rows, list), "%s: outputs/metrics.jsonl: %s" % (name, rows)):
        loss_epochs = [r.get("epoch") for r in rows if r.get("name") == "loss"]
        finals = [r for r in rows if r.get("name") == "final_acc"]
        C.check(loss_epochs == list(range(1, epochs + 1)) and len(finals) == 1,
                "%s: metrics.jsonl has loss for epochs %s and %d final_acc rows (one writer "
                "wants epochs 1..%d once, one final_acc)" % (name, loss_epochs, len(finals), epochs))
    try:
        with open(os.path.join(out, "run.json")) as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        run = {"status": "unreadable: %s" % e}
    C.check(run.get("status") == "Completed", "%s: run.json status %r" % (name, run.get("status")))


def cluster_run(C, tmp, data, name, spec, extra, order=None):
    """Runs the cluster; checks every task exited 0 and the files. Its weights or None."""
    folder = os.path.join(tmp, name)
    t0 = time.monotonic()
    c = TC.run_cluster(folder, spec, TC.train_args(folder, data, extra), limit_s=LIMIT_S, order=order)
    elapsed = time.monotonic() - t0
    bad = [t.name for t in c.tasks if t.rc != 0]
    if not C.check(not bad, "%s: tasks %s did not exit 0" % (name, bad), c.summary()):
        return None, c
    ranks = len(spec.get("chief", [])) + len(spec.get("worker", []))
    epochs = int(extra[extra.index("--epochs") + 1])
    check_files(C, name, c, ranks, len(spec.get("ps", [])), epochs)
    w, why = TC.try_weights(model_path(folder))
    C.check(w is not None, "%s: %s" % (name, why))
    print("%s: %d tasks exited 0 in %.1f s" % (name, len(c.tasks), elapsed), flush=True)
    return w, c


def compare(C, name, w, ref_name, ref, tol=TOL):
    if w is None or ref is None:
        C.check(False, "%s vs %s: not compared (a run failed above)" % (name, ref_name))
        return
    d = TC.max_abs_diff(w, ref)
    if C.check(d <= tol, "%s vs %s: max |dw| = %.3g > %g" % (name, ref_name, d, tol)):
        C.ok("%s vs %s: max |dw| = %.3g" % (name, ref_name, d))


def resume_cluster(C, tmp, data, name, ckpt, extra):
    """A fresh chief + worker + 2 ps cluster resuming from a copy of ckpt in
    its own outputs: (folder, cluster), the cluster None when a task failed."""
    folder = os.path.join(tmp, name)
    os.makedirs(os.path.join(folder, "outputs", "checkpoints"))
    ck = os.path.join(folder, "outputs", "checkpoints", os.path.basename(ckpt))
    shutil.copyfile(ckpt, ck)
    c = TC.run_cluster(folder, TC.cluster_spec(1, 1, 2), TC.train_args(
        folder, data, extra + ["--resume-from", ck]), limit_s=LIMIT_S)
    bad = [t.name for t in c.tasks if t.rc != 0]
    ok = C.check(not bad, "%s: tasks %s did not exit 0" % (name, bad), c.summary())
    return folder, c if ok else None


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"))
        e1 = ["--epochs", "1"]
        ref2 = plain(C, tmp, data, "plain-b20", SGD + e1 + ["--batch-size", str(2 * B)])
        ref3 = plain(C, tmp, data, "plain-b30", SGD + e1 + ["--batch-size", str(3 * B)])
        refm = plain(C, tmp, data, "plain-b20-momentum", MOM + e1 + ["--batch-size", str(2 * B)])
        # The oracle itself: trained, and able to tell batch 2B from 3B.
        if ref2 is not None and ref3 is not None:
            C.check(np.any(ref2["dense_2/bias:0"]), "plain-b20: biases still zero: nothing trained")
            d = TC.max_abs_diff(ref2, ref3)
            C.check(d > 100 * TOL, "oracle: batch 20 and batch 30 runs differ by only %.3g" % d)
            print("oracle: plain batch 20 vs batch 30 differ by %.3g" % d)

        # TF_CONFIG set but empty: a plain run, bit for bit.
        folder = os.path.join(tmp, "empty-tfconfig")
        rc, _, err = TC.run_plain(folder, data, SGD + e1 + ["--batch-size", str(2 * B)],
                                  env_extra={"TF_CONFIG": ""})
        if C.check(rc == 0, "TF_CONFIG='': exit %s" % rc, err[-800:]) and ref2 is not None:
            w, why = TC.try_weights(model_path(folder))
            if C.check(w is not None, "TF_CONFIG='': %s" % why):
                compare(C, "TF_CONFIG=''", w, "plain-b20", ref2, tol=0.0)

        folder = os.path.join(tmp, "mpirun-np2")
        rc, out = TC.run_mpi(2, folder, data, SGD + e1 + ["--batch-size", str(B)])
        mpi2 = None
        if C.check(rc == 0, "mpirun -np 2 (oracle): exit %s" % rc, out[-1500:]):
            mpi2, why = TC.try_weights(model_path(folder))
            C.check(mpi2 is not None, "mpirun -np 2 (oracle): %s" % why)

        run = SGD + e1 + ["--batch-size", str(B)]
        w, _ = cluster_run(C, tmp, data, "chief+worker", TC.cluster_spec(1, 1), run)
        compare(C, "chief+worker (ring)", w, "plain-b20", ref2)
        compare(C, "chief+worker (ring)", w, "mpirun -np 2", mpi2)

        w, _ = cluster_run(C, tmp, data, "2workers-nochief", TC.cluster_spec(0, 2), run)
        compare(C, "worker 0 + worker 1, no chief", w, "plain-b20", ref2)

        # Started in reverse order: the chief comes last and the others wait for it.
        w, _ = cluster_run(C, tmp, data, "chief+2workers", TC.cluster_spec(1, 2), run,
                           order="reverse")
        compare(C, "chief+2workers (ring, 3 ranks)", w, "plain-b30", ref3)

        w, _ = cluster_run(C, tmp, data, "ps1", TC.cluster_spec(1, 1, 1), run)
        compare(C, "chief+worker+1ps (sgd)", w, "plain-b20", ref2)

        w, _ = cluster_run(C, tmp, data, "ps2", TC.cluster_spec(1, 1, 2), run, order="reverse")
        compare(C, "chief+worker+2ps (sgd)", w, "plain-b20", ref2)

        # Momentum with 2 ps, 2 epochs, a checkpoint each epoch; then a fresh
        # cluster resumes from the epoch-1 checkpoint.
        mom = MOM + ["--batch-size", str(B), "--checkpoint-every", "1"]
        straight, c = cluster_run(C, tmp, data, "ps2-momentum", TC.cluster_spec(1, 1, 2),
                                  mom + ["--epochs", "2"])
        ck1 = os.path.join(c.folder, "outputs", "checkpoints", "ckpt-epoch-1.h5")
        w1, why = TC.try_weights(ck1) if straight is not None else (None, "the run failed")
        C.check(w1 is not None, "ps2-momentum: epoch-1 checkpoint: %s" % why)
        compare(C, "chief+worker+2ps (momentum) epoch-1 checkpoint", w1, "plain-b20-momentum", refm)

        resumed = None
        if w1 is not None:
            folder, c2 = resume_cluster(C, tmp, data, "ps2-momentum-resumed", ck1,
                                        mom + ["--epochs", "2"])
            if c2 is not None:
                chief_out = c2.task("chief", 0).stdout() + TC.read_text(
                    os.path.join(folder, "logs", "rank-0.log"))
                C.check("resuming from" in chief_out and "at epoch 1" in chief_out,
                        "ps2-momentum-resumed: the chief did not say it resumed at epoch 1")
                resumed, why = TC.try_weights(model_path(folder))
                C.check(resumed is not None, "ps2-momentum-resumed: %s" % why)
        compare(C, "resumed from epoch 1 (2ps, momentum)", resumed, "the uninterrupted 2ps run",
                straight)
        # The momentum state matters: the resumed run is not the SGD-like restart.
        if resumed is not None and w1 is not None:
            C.check(TC.max_abs_diff(resumed, w1) > 100 * TOL,
                    "ps2-momentum-resumed: epoch 2 changed nothing")

        # Resuming a finished run (its last checkpoint, no step left): the ps
        # tasks still get their start and end cleanly; the model is the same.
        ck2 = os.path.join(c.folder, "outputs", "checkpoints", "ckpt-epoch-2.h5")
        if straight is not None and os.path.exists(ck2):
            folder, c3 = resume_cluster(C, tmp, data, "ps2-resume-done", ck2,
                                        mom + ["--epochs", "2"])
            if c3 is not None:
                done, why = TC.try_weights(model_path(folder))
                C.check(done is not None, "ps2-resume-done: %s" % why)
                compare(C, "resumed after the last epoch (2ps)", done, "the uninterrupted 2ps run",
                        straight, tol=0.0)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
