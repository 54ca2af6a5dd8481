"""Exact resume: 4 epochs straight and 2 epochs then --resume-from latest to 4
give bit-identical weights and identical per-epoch metrics, with N=1 (SGD and
momentum) and N=2 ranks; metrics.jsonl holds every epoch once and one final_acc; tfdist eval
reproduces final_acc exactly; mismatched flags are one-line errors naming the
field; --keep-checkpoints keeps the newest K."""
import json
import os
import shutil
import subprocess
import sys

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
other = C.make_data(os.path.join(d, "other"), seed=4)


def vals(out, name):
    return [(r["epoch"], r["value"]) for r in T.metrics(out) if r["name"] == name]


def check_eval(out, mpi_tag):
    p = T.run(["eval", "--model", os.path.join(out, "model"), "--data-folder", data, "--json"])
    T.check(p.returncode == 0, f"{mpi_tag}: eval failed: {p.stderr.strip()}")
    if p.returncode != 0:
        return
    ev = json.loads(p.stdout)
    final = T.metric(out, "final_acc")[-1]
    T.check(ev["accuracy"] == final, f"{mpi_tag}: eval accuracy {ev['accuracy']!r} != final_acc {final!r}")
    cm = ev["confusion_matrix"]
    T.check(sum(map(sum, cm)) == ev["samples"] == 200, f"{mpi_tag}: confusion matrix total")
    T.check(sum(cm[i][i] for i in range(10)) == round(final * 200), f"{mpi_tag}: diagonal != correct")
    T.check(0.3 < final < 1.0, f"{mpi_tag}: final_acc {final} outside (0.3, 1): data too easy or too hard")


def exact_resume(tag, mpi, extra):
    spe = 600 // (25 * max(mpi, 1))  # steps per epoch
    straight, resumed = os.path.join(d, tag + "-straight"), os.path.join(d, tag + "-resumed")
    p = C.train(d, data, straight, ["--epochs", "4"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: straight run failed: {p.stderr.strip()[-500:]}")
    p = C.train(d, data, resumed, ["--epochs", "2"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: 2-epoch run failed: {p.stderr.strip()[-500:]}")
    latest = os.path.join(resumed, "checkpoints", "latest")
    T.check(open(latest).read() == "ckpt-epoch-2.h5\n", f"{tag}: latest pointer")
    p = C.train(d, data, resumed, ["--epochs", "4", "--resume-from", "latest"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: resume failed: {p.stderr.strip()[-500:]}")
    T.check("resuming from" in p.stdout and f"at epoch 2 (step {2 * spe})" in p.stdout,
            f"{tag}: no resume line: {p.stdout[-300:]}")
    if failures_before != len(T.failures):
        return
    T.check(C.same_weights(os.path.join(straight, "model", "model.h5"),
                           os.path.join(resumed, "model", "model.h5")),
            f"{tag}: resumed weights differ from the straight run's")
    a, b = vals(straight, "validation_acc"), vals(resumed, "validation_acc")
    T.check(a == b and [e for e, _ in b] == [1, 2, 3, 4], f"{tag}: validation_acc {a} vs {b}")
    T.check(vals(straight, "loss") == vals(resumed, "loss"), f"{tag}: per-epoch loss differs")
    # One final_acc, the continued run's: the 2-epoch run's final_acc is not this run's.
    T.check(vals(straight, "final_acc") == vals(resumed, "final_acc") and
            [e for e, _ in vals(resumed, "final_acc")] == [4],
            f"{tag}: final_acc rows {vals(straight, 'final_acc')} vs {vals(resumed, 'final_acc')}")
    finals = [(r["epoch"], r["value"]) for r in T.metrics(resumed) if r["name"] == "final_acc"]
    T.check(finals == [(4, b[-1][1])], f"{tag}: final_acc rows {finals}: the 2-epoch run's "
            "final_acc must not survive the resume")
    steps = [r["step"] for r in T.metrics(resumed) if r["name"] == "loss"]
    T.check(steps == [spe, 2 * spe, 3 * spe, 4 * spe], f"{tag}: global steps {steps}")
    run = json.load(open(os.path.join(resumed, "run.json")))
    T.check(run.get("resumed_from", {}).get("epoch") == 2, f"{tag}: run.json resumed_from")
    check_eval(straight, tag)
    # Four checkpoints from the straight run, each loadable, the last equal to the model.
    ck = os.path.join(straight, "checkpoints")
    T.check(sorted(os.listdir(ck)) == ["ckpt-epoch-2.h5", "ckpt-epoch-4.h5", "latest"],
            f"{tag}: checkpoints {sorted(os.listdir(ck))}")
    T.check(C.same_weights(os.path.join(ck, "ckpt-epoch-4.h5"),
                           os.path.join(straight, "model", "model.h5")), f"{tag}: last checkpoint")


failures_before = 0
for tag, mpi, extra in (("n1-sgd", 0, []),
                        ("n1-momentum", 0, ["--optimizer", "momentum", "--learning-rate", "0.002"]),
                        ("n2-momentum", 2, ["--optimizer", "momentum", "--learning-rate", "0.002"])):
    failures_before = len(T.failures)
    exact_resume(tag, mpi, extra)

# Nothing left to train: resuming at the last epoch reports the same final_acc.
out = os.path.join(d, "n1-sgd-resumed")
before = T.metric(out, "final_acc")[-1]
p = C.train(d, data, out, ["--epochs", "4", "--resume-from",
                           os.path.join(out, "checkpoints", "ckpt-epoch-4.h5")])
T.check(p.returncode == 0, f"resume at the end failed: {p.stderr.strip()}")
T.check(T.metric(out, "final_acc")[-1] == before, "resume at the end: final_acc changed")
T.check([e for e, _ in vals(out, "validation_acc")] == [1, 2, 3, 4], "resume at the end: epochs")
T.check(len(T.metric(out, "final_acc")) == 1, "resume at the end: final_acc written twice")

# A metrics.jsonl whose last row lost its newline (a write torn by a crash):
# the resume rewrites it whole, with no write past its buffer (valgrind,
# where installed: the rewrite used to put its NUL one byte past the end).
out = os.path.join(d, "torn")
p = C.train(d, data, out, ["--epochs", "2"])
T.check(p.returncode == 0, f"torn: first run failed: {p.stderr.strip()}")
mpath = os.path.join(out, "metrics.jsonl")
rows = [l for l in open(mpath).read().splitlines() if '"final_acc"' not in l]
open(mpath, "w").write("\n".join(rows))  # no newline after the last row
vg = shutil.which("valgrind")
resume = ["--epochs", "3", "--resume-from", "latest"]
if vg:
    supp = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "valgrind.supp")  # ld.so's own false positive under $ORIGIN run paths
    q = subprocess.run([vg, "-q", "--error-exitcode=9", "--suppressions=" + supp, T.TFDIST] +
                       C.train_args(d, data, out, resume), capture_output=True, text=True,
                       timeout=300)
else:
    q = C.train(d, data, out, resume)
T.check(q.returncode == 0, f"torn: resume rc {q.returncode}: {q.stderr.strip()[-800:]}")
T.check([e for e, _ in vals(out, "validation_acc")] == [1, 2, 3], f"torn: {vals(out, 'validation_acc')}")

# Flags that disagree with the checkpoint: one line naming the field.
ck1 = os.path.join(d, "n1-sgd-resumed", "checkpoints", "ckpt-epoch-2.h5")
ck2 = os.path.join(d, "n2-momentum-resumed", "checkpoints", "ckpt-epoch-2.h5")
model = os.path.join(d, "n1-sgd-straight", "model", "model.h5")
bad = [
    (["--resume-from", ck1, "--batch-size", "20"], "--batch-size is 20 but the checkpoint has 25"),
    (["--resume-from", ck1, "--first-layer-neurons", "65"], "--first-layer-neurons is 65"),
    (["--resume-from", ck1, "--second-layer-neurons", "31"], "--second-layer-neurons is 31"),
    (["--resume-from", ck1, "--seed", "6"], "--seed is 6"),
    (["--resume-from", ck1, "--learning-rate", "0.02"], "--learning-rate is 0.02"),
    (["--resume-from", ck1, "--optimizer", "momentum"], "--optimizer is 'momentum'"),
    (["--resume-from", ck1, "--max-steps", "5"], "--max-steps"),
    (["--resume-from", ck1, "--epochs", "1"], "--epochs 1 is below the checkpoint's epoch 2"),
    (["--resume-from", ck2, "--optimizer", "momentum", "--learning-rate", "0.002"], "world size is 1 ranks but the checkpoint was written by 2"),
    (["--resume-from", model], "not a checkpoint"),
    (["--resume-from", os.path.join(d, "nothing-here.h5")], "No such file"),
    (["--resume-from", "latest", "--outputs", os.path.join(d, "empty-out")], "no checkpoint in"),
]
for args, needle in bad:
    out = os.path.join(d, "bad-out")
    full = ["--epochs", "4"] + args
    if "--outputs" not in args:
        full += ["--outputs", out]
    p = T.run(["train", "--data-folder", data, "--logs", os.path.join(d, "logs"), "--progress", "off",
               "--batch-size", "25", "--first-layer-neurons", "64", "--second-layer-neurons", "32",
               "--seed", "5"] + full)
    T.check(C.one_error_line(p) and needle in p.stderr,
            f"{args}: expected one error line with '{needle}', got rc {p.returncode}: {p.stderr.strip()}")
T.check(not os.path.exists(os.path.join(d, "bad-out")), "a rejected resume created its --outputs")
# A rejected resume leaves the run it meant to continue as it was: run.json
# (its id and Completed status, which model register links to) and metrics.jsonl.
out = os.path.join(d, "n1-sgd-resumed")
keep = {n: open(os.path.join(out, n), "rb").read() for n in ("run.json", "metrics.jsonl")}
p = C.train(d, data, out, ["--epochs", "6", "--resume-from", "latest", "--batch-size", "20"])
T.check(C.one_error_line(p) and "--batch-size is 20" in p.stderr, f"mismatch into a run: {p.stderr.strip()}")
for n, before in keep.items():
    T.check(open(os.path.join(out, n), "rb").read() == before, f"a rejected resume rewrote {n}")
# Other training data: named as --data-folder.
p = C.train(d, other, os.path.join(d, "bad-out"), ["--epochs", "4", "--resume-from", ck1])
T.check(C.one_error_line(p) and "--data-folder (training data crc32)" in p.stderr,
        f"other data: {p.stderr.strip()}")

# --keep-checkpoints 2 with a checkpoint every epoch keeps the newest two.
out = os.path.join(d, "keep")
p = C.train(d, data, out, ["--epochs", "5", "--checkpoint-every", "1", "--keep-checkpoints", "2"])
T.check(p.returncode == 0, f"keep run failed: {p.stderr.strip()}")
T.check(sorted(os.listdir(os.path.join(out, "checkpoints"))) ==
        ["ckpt-epoch-4.h5", "ckpt-epoch-5.h5", "latest"], "keep-checkpoints 2")
# --checkpoint-every 0: none at all.
out = os.path.join(d, "none")
p = C.train(d, data, out, ["--epochs", "2", "--checkpoint-every", "0"])
T.check(p.returncode == 0 and not os.path.exists(os.path.join(out, "checkpoints")), "checkpoint-every 0")
C.finish(d)
