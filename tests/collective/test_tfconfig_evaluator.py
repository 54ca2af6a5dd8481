"""The TF_CONFIG "evaluator" task (TF's sidecar evaluator), started before
the cluster it watches: chief + worker + 1 ps train 3 epochs with a
checkpoint each epoch; the evaluator writes eval_accuracy for epochs 1..3,
equal to the chief's validation_acc for the same epochs (counts of correct
answers: exact) and eval_loss within 1e-6 of validation_loss (the chief sums
two ranks' shares, and a row's float32 loss depends on where it falls in the
BLAS's GEMM tiles: 1.4e-8 apart with OpenBLAS's Haswell kernels on an AMD
EPYC; epochs differ by 50% and more), then final_eval_accuracy equal to final_acc, and exits 0.
An evaluator with no run to watch ends after --timeout naming the folder (a
run already Completed when it starts is not its run); a run killed under it
ends it too, saying run.json still says Running. Started on a folder that
still holds an older run's checkpoints (epochs 1..4, another seed), it scores
only the new run's epochs 1..3, each once, as the new chief did."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import tfcluster as TC


def start_evaluator(folder, spec, args, limit_s=90):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": spec,
                                                 "task": {"type": "evaluator", "index": 0}}))
    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, "evaluator.out"), "w")
    err = open(os.path.join(folder, "evaluator.err"), "w")
    p = subprocess.Popen(["timeout", "-k", "5", str(limit_s), TC.TFDIST] + list(args), env=env,
                         stdout=out, stderr=err, start_new_session=True)
    out.close()
    err.close()
    return p


def rows(path, name):
    got = {}
    for line in TC.read_text(path).splitlines():
        r = json.loads(line)
        if r["name"] == name:
            got[r["epoch"]] = r["value"]
    return got


def run_with_evaluator(C, folder, spec, args, tag):
    """Starts the evaluator, then the cluster, half a second later; whether
    every task and the evaluator ended with 0 (checked, with their output)."""
    ev = start_evaluator(folder, spec, args)
    time.sleep(0.5)
    c = TC.run_cluster(folder, spec, args, limit_s=90)
    try:
        rc = ev.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(ev.pid, signal.SIGKILL)
        rc = None
    bad = [t.name for t in c.tasks if t.rc != 0]
    return C.check(not bad and rc == 0, "%s: cluster %s, evaluator exit %s" % (tag, bad, rc),
                   c.summary() + "\n  evaluator: " +
                   TC.read_text(os.path.join(folder, "evaluator.err")))


def watch_case(C, tmp, data):
    folder = os.path.join(tmp, "watch")
    spec = TC.cluster_spec(1, 1, 1)
    args = TC.train_args(folder, data, ["--epochs", "3", "--batch-size", "10", "--seed", "5"])
    args[args.index("--checkpoint-every") + 1] = "1"
    if not run_with_evaluator(C, folder, spec, args, "evaluator"):  # it waits for the run
        return
    chief = os.path.join(folder, "outputs", "metrics.jsonl")
    mine = os.path.join(folder, "outputs", "eval", "metrics.jsonl")
    val, acc = rows(chief, "validation_acc"), rows(mine, "eval_accuracy")
    vloss, loss = rows(chief, "validation_loss"), rows(mine, "eval_loss")
    C.check(sorted(acc) == [1, 2, 3] and all(acc[e] == val[e] for e in acc),
            "evaluator: eval_accuracy %s != the chief's validation_acc %s" % (acc, val))
    C.check(sorted(loss) == [1, 2, 3] and
            all(abs(loss[e] - vloss[e]) <= 1e-6 * abs(vloss[e]) for e in loss),
            "evaluator: eval_loss %s vs validation_loss %s" % (loss, vloss))
    C.check(len(set(acc.values())) > 1 or len(set(loss.values())) > 1,
            "evaluator: every epoch scored the same (were the checkpoints the same?)")
    final, final_acc = rows(mine, "final_eval_accuracy"), rows(chief, "final_acc")
    C.check(list(final.values()) == list(final_acc.values()) and len(final) == 1,
            "evaluator: final_eval_accuracy %s != final_acc %s" % (final, final_acc))
    C.check(os.path.exists(os.path.join(folder, "logs", "evaluator-0.log")),
            "evaluator: no logs/evaluator-0.log")
    C.ok("evaluator: epochs %s scored as the chief did (%s), final %s"
         % (sorted(acc), [round(acc[e], 4) for e in sorted(acc)], list(final.values())))


def row_list(path, name):
    """(epoch, value) of every row called name, in file order (repeats kept)."""
    out = []
    for line in TC.read_text(path).splitlines():
        r = json.loads(line)
        if r["name"] == name:
            out.append((r["epoch"], r["value"]))
    return out


def old_run_case(C, tmp, data):
    """A rerun into the same --outputs: the old run's checkpoints are not this run's."""
    folder = os.path.join(tmp, "rerun")
    old = ["--epochs", "4", "--batch-size", "10", "--seed", "7", "--checkpoint-every", "1"]
    rc, _, err = TC.run_plain(folder, data, old)
    if not C.check(rc == 0, "rerun: the old run failed: %s" % err.strip()):
        return
    chief = os.path.join(folder, "outputs", "metrics.jsonl")
    old_val = rows(chief, "validation_acc")
    spec = TC.cluster_spec(1, 1, 0)
    args = TC.train_args(folder, data, ["--epochs", "3", "--batch-size", "10", "--seed", "5"])
    args[args.index("--checkpoint-every") + 1] = "1"
    # the evaluator sees the old run's checkpoints and Completed run.json first
    if not run_with_evaluator(C, folder, spec, args, "rerun"):
        return
    val = rows(chief, "validation_acc")
    got = row_list(os.path.join(folder, "outputs", "eval", "metrics.jsonl"), "eval_accuracy")
    want = [(e, val[e]) for e in sorted(val)]
    C.check(any(old_val[e] != val[e] for e in val),
            "rerun: the old run scored as the new one did (%s): the case proves nothing" % old_val)
    C.check(os.path.exists(os.path.join(folder, "outputs", "checkpoints", "ckpt-epoch-4.h5")),
            "rerun: the old run's ckpt-epoch-4.h5 is gone; the evaluator never faced it")
    if C.check(got == want, "rerun: eval_accuracy rows %s, expected the new run's %s (old run: %s)"
               % (got, want, old_val)):
        C.ok("rerun: only the new run's epochs scored: %s" % [(e, round(v, 4)) for e, v in got])


def no_run_case(C, tmp, data, folder):
    """No run, or only one that was over before the evaluator started."""
    spec = TC.cluster_spec(1, 1, 0)
    t0 = time.monotonic()
    ev = start_evaluator(folder, spec, TC.train_args(folder, data, ["--timeout", "2"]), limit_s=30)
    rc = ev.wait(timeout=40)
    took = time.monotonic() - t0
    err = TC.read_text(os.path.join(folder, "evaluator.err"))
    if C.check(rc == 1 and took < 15 and "no run started" in err and "outputs" in err,
               "evaluator without a run: exit %s after %.1f s: %s" % (rc, took, err.strip())):
        C.ok("evaluator without a run: exit 1 after %.1f s: %s" % (took, err.strip()))


def killed_run_case(C, tmp, data):
    folder = os.path.join(tmp, "killed")
    spec = TC.cluster_spec(1, 0, 0)
    args = TC.train_args(folder, data, ["--epochs", "1000", "--batch-size", "10"])
    ev = start_evaluator(folder, spec, args)
    c = TC.Cluster(folder, spec)
    try:
        c.start(args, limit_s=120)
        deadline = time.monotonic() + 40
        status = os.path.join(folder, "outputs", "run.json")
        while time.monotonic() < deadline and '"Running"' not in TC.read_text(status):
            time.sleep(0.05)
        c.task("chief", 0).kill()
        rc = ev.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(ev.pid, signal.SIGKILL)
        rc = None
    finally:
        c.kill()
    err = TC.read_text(os.path.join(folder, "evaluator.err"))
    if C.check(rc == 1 and "still says Running" in err,
               "evaluator of a killed run: exit %s: %s" % (rc, err.strip())):
        C.ok("evaluator of a killed run: exit 1: %s" % err.strip())


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"), n_train=1200, n_test=200)
        watch_case(C, tmp, data)
        no_run_case(C, tmp, data, os.path.join(tmp, "norun"))
        no_run_case(C, tmp, data, os.path.join(tmp, "watch"))  # its run Completed before
        killed_run_case(C, tmp, data)
        old_run_case(C, tmp, data)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
