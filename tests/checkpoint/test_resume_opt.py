"""Exact resume for every optimizer, each under a schedule with a warm-up:
4 epochs straight and 2 epochs then --resume-from latest to 4 give
bit-identical weights and the same per-epoch loss and learning_rate rows
(1 rank; adam also with 2 ranks). The checkpoint holds the optimizer's
kind, hyper-parameters, state (2 floats per weight for adam and adamw) and
update count. Resuming with another optimizer or another beta1 is a one-line
error. learning_rate rows are the scheduled rate of each epoch's last update."""
import math
import os

import h5py

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
SPE = 600 // 25  # steps per epoch at 1 rank


def rows(out, name):
    return [(r["epoch"], r["value"]) for r in T.metrics(out) if r["name"] == name]


CASES = (
    ("sgd", 0, ["--optimizer", "sgd", "--lr-schedule", "step", "--lr-decay-rate", "0.5",
                "--lr-decay-epochs", "1", "--weight-decay", "0.01"]),
    ("momentum", 0, ["--optimizer", "momentum", "--learning-rate", "0.002",
                     "--lr-schedule", "exponential", "--lr-decay-rate", "0.5"]),
    ("nesterov", 0, ["--optimizer", "nesterov", "--learning-rate", "0.002",
                     "--warmup-epochs", "1"]),
    ("rmsprop", 0, ["--optimizer", "rmsprop", "--learning-rate", "0.001", "--rho", "0.95",
                    "--lr-schedule", "cosine", "--lr-decay-epochs", "3", "--warmup-epochs", "1"]),
    ("adam", 0, ["--optimizer", "adam", "--learning-rate", "0.001", "--lr-schedule", "cosine",
                 "--lr-min", "0.0001", "--lr-decay-epochs", "2.5", "--warmup-epochs", "1.5"]),
    ("adamw", 0, ["--optimizer", "adamw", "--learning-rate", "0.001", "--weight-decay", "0.05",
                  "--lr-schedule", "cosine", "--lr-decay-epochs", "4"]),
    ("adam-n2", 2, ["--optimizer", "adam", "--learning-rate", "0.001", "--lr-schedule", "cosine",
                    "--lr-decay-epochs", "3", "--warmup-epochs", "1"]),
)

for tag, mpi, extra in CASES:
    before = len(T.failures)
    straight, resumed = os.path.join(d, tag + "-straight"), os.path.join(d, tag + "-resumed")
    p = C.train(d, data, straight, ["--epochs", "4"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: straight run failed: {p.stderr.strip()[-500:]}")
    p = C.train(d, data, resumed, ["--epochs", "2"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: 2-epoch run failed: {p.stderr.strip()[-500:]}")
    p = C.train(d, data, resumed, ["--epochs", "4", "--resume-from", "latest"] + extra, mpi=mpi)
    T.check(p.returncode == 0, f"{tag}: resume failed: {p.stderr.strip()[-500:]}")
    if len(T.failures) != before:
        continue
    T.check(C.same_weights(os.path.join(straight, "model", "model.h5"),
                           os.path.join(resumed, "model", "model.h5")),
            f"{tag}: resumed weights differ from the straight run's")
    for name in ("loss", "validation_acc", "learning_rate"):
        a, b = rows(straight, name), rows(resumed, name)
        T.check(a == b and len(a) == 4, f"{tag}: {name} {a} vs {b}")
    kind = tag.split("-")[0]
    with h5py.File(os.path.join(resumed, "checkpoints", "ckpt-epoch-2.h5"), "r") as f:
        g = f["optimizer"]
        P = sum(w.size for w in T.weights(os.path.join(resumed, "model", "model.h5")))
        k = 2 if kind.startswith("adam") else 1
        T.check(g.attrs["kind"].decode().rstrip("\0") == kind, f"{tag}: kind {g.attrs['kind']!r}")
        T.check(g["state"].shape == (k * P,), f"{tag}: state shape {g['state'].shape}, P {P}")
        spe = SPE // max(mpi, 1)
        T.check(int(g.attrs["step"]) == 2 * spe, f"{tag}: stored update count {g.attrs['step']}")
        for a in ("beta1", "beta2", "epsilon", "rho", "weight_decay"):
            T.check(a in g.attrs, f"{tag}: no {a} attribute")
        if kind != "sgd":
            T.check(abs(g["state"][:]).max() > 0, f"{tag}: state all zero")

# learning_rate rows: the rate of each epoch's last update, the formula of
# train/lr_schedule.c written again here (adam: a linear warm-up over 1.5
# epochs, then cosine 1e-3 -> 1e-4 over 2.5 epochs of SPE updates).
W, D = round(1.5 * SPE), round(2.5 * SPE)
for e, v in rows(os.path.join(d, "adam-straight"), "learning_rate"):
    step = e * SPE - 1
    x = min((step - W) / (D - 1), 1.0)
    want = 1e-3 * (step + 1) / W if step < W else 1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * x)) / 2
    T.check(abs(v - want) <= 1e-6 * want, f"adam: learning_rate at epoch {e} {v}, expected {want}")
# step schedule (sgd): 0.01 * 0.5^floor(e) with e the epochs done before the last update
for e, v in rows(os.path.join(d, "sgd-straight"), "learning_rate"):
    want = 0.01 * 0.5 ** math.floor((e * SPE - 1) / SPE)
    T.check(abs(v - want) <= 1e-6 * want, f"sgd: learning_rate at epoch {e} {v}, expected {want}")

# Another optimizer, or another beta1, on resume: one line naming the flag.
ck = os.path.join(d, "adam-resumed", "checkpoints", "ckpt-epoch-2.h5")
ck_sgd = os.path.join(d, "sgd-resumed", "checkpoints", "ckpt-epoch-2.h5")
adam = CASES[4][2]
for args, needle in (
        (["--resume-from", ck, "--optimizer", "adamw", "--learning-rate", "0.001"],
         "--optimizer is 'adamw' but the checkpoint has 'adam'"),
        (["--resume-from", ck_sgd, "--optimizer", "adam", "--learning-rate", "0.01"],
         "--optimizer is 'adam' but the checkpoint has 'sgd'"),
        (["--resume-from", ck] + adam + ["--beta1", "0.8"], "--beta1 is 0.80000000000000004"),
        (["--resume-from", ck_sgd, "--weight-decay", "0"], "--weight-decay is 0 but"),
        # the schedule too: the same update count must give the same rate
        (["--resume-from", ck] + adam[:-2], "--warmup-epochs is 0 but the checkpoint has 1.5"),
        (["--resume-from", ck] + adam[:-4] + ["--lr-decay-epochs", "3", "--warmup-epochs", "1.5"],
         "--lr-decay-epochs is 3 but the checkpoint has 2.5"),
        (["--resume-from", ck, "--optimizer", "adam", "--learning-rate", "0.001", "--lr-schedule",
          "exponential", "--lr-decay-epochs", "2.5", "--warmup-epochs", "1.5"],
         "--lr-schedule is 'exponential' but the checkpoint has 'cosine'")):
    p = C.train(d, data, os.path.join(d, "bad-out"), ["--epochs", "4"] + args)
    T.check(C.one_error_line(p) and needle in p.stderr,
            f"{args}: expected one error line with {needle!r}: rc {p.returncode}: {p.stderr.strip()}")
    T.check(p.returncode == 2 or p.returncode > 0, f"{args}: rc {p.returncode}")
C.finish(d)
