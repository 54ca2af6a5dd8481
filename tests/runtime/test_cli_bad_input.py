"""Bad input is a one-line error naming the file or flag, with a non-zero
exit, no crash, and the previous model in --outputs left untouched."""
import hashlib
import json
import os
import shutil
import struct
import subprocess

import numpy as np

import idxgen
import tfdtest as T

d = T.tmpdir()
good = os.path.join(d, "good")
paths = idxgen.write_set(good, np.random.default_rng(3), 300, 100, gz=False, nested="")
out = os.path.join(d, "outputs")
base = ["--epochs", "1", "--batch-size", "25", "--outputs", out, "--logs", os.path.join(d, "logs")]
p = T.run(["train", "--data-folder", good] + base)
T.check(p.returncode == 0, f"good run failed: {p.stderr}")
model = os.path.join(out, "model", "model.h5")
digest = hashlib.sha256(open(model, "rb").read()).hexdigest()


def broken(name, mutate):
    """A copy of the good set with one file replaced by mutate(bytes)."""
    folder = os.path.join(d, "case-" + str(len(os.listdir(d))))
    shutil.copytree(good, folder)
    target = os.path.join(folder, name)
    data = open(target, "rb").read()
    new = mutate(data)
    if new is None:
        os.remove(target)
    else:
        open(target, "wb").write(new)
    return folder, target


def expect_error(label, args, *needles):
    p = T.run(["train"] + args + base)
    err = p.stderr.strip()
    T.check(p.returncode not in (0,) and p.returncode > 0, f"{label}: exit {p.returncode}")
    T.check(err.count("\n") == 0 and err.startswith("tfdist: error:"), f"{label}: not one line: {err!r}")
    for n in needles:
        T.check(n in err, f"{label}: {n!r} not in {err!r}")


TI, TL = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
expect_error("missing folder", ["--data-folder", os.path.join(d, "nope")], os.path.join(d, "nope"))
f, _ = broken("t10k-labels-idx1-ubyte", lambda b: None)
expect_error("missing file", ["--data-folder", f], "t10k-labels-idx1-ubyte")
f, t = broken(TI, lambda b: struct.pack(">I", 0x804) + b[4:])
expect_error("wrong magic", ["--data-folder", f], t, "magic")
f, t = broken(TL, lambda b: struct.pack(">I", 0x803) + b[4:])
expect_error("labels magic", ["--data-folder", f], t, "magic")
f, t = broken(TI, lambda b: b[:10])
expect_error("truncated header", ["--data-folder", f], t, "truncated", "header")
f, t = broken(TI, lambda b: b[:5000])
expect_error("truncated body", ["--data-folder", f], t, "truncated", "body")
f, t = broken(TL, lambda b: b[:20] + bytes([10]) + b[21:])
expect_error("label 10", ["--data-folder", f], t, "label 10")
f, t = broken(TL, lambda b: b[:20] + bytes([255]) + b[21:])
expect_error("label 255", ["--data-folder", f], t, "label 255")
f, t = broken(TL, lambda b: struct.pack(">II", 0x801, 299) + b[8:-1])
expect_error("count mismatch", ["--data-folder", f], t, "299")
f, t = broken(TI, lambda b: struct.pack(">IIII", 0x803, 300, 27, 28) + b[16:16 + 300 * 27 * 28])
expect_error("rows*cols", ["--data-folder", f], t, "784")
f, t = broken(TI, lambda b: b + b"junk")
expect_error("trailing bytes", ["--data-folder", f], t, "trailing")
f, t = broken(TI, lambda b: b"")
expect_error("empty file", ["--data-folder", f], t)

expect_error("batch 0", ["--data-folder", good, "--batch-size", "0"], "--batch-size")
expect_error("negative rate", ["--data-folder", good, "--learning-rate", "-1"], "--learning-rate")
expect_error("non-numeric", ["--data-folder", good, "--epochs", "abc"], "--epochs", "abc")
# The optimizer's and the schedule's flags (exit 2: a usage error, like every flag error).
for label, args, needles in (
        ("beta1 1", ["--optimizer", "adam", "--beta1", "1"], ["--beta1", "below 1"]),
        ("beta2 1", ["--optimizer", "adam", "--beta2", "1"], ["--beta2", "below 1"]),
        ("rho 1", ["--optimizer", "rmsprop", "--rho", "1"], ["--rho", "below 1"]),
        ("negative decay", ["--weight-decay", "-0.1"], ["--weight-decay"]),
        ("epsilon 0", ["--optimizer", "adam", "--epsilon", "0"], ["--epsilon"]),
        ("unknown optimizer", ["--optimizer", "adagrad"], ["--optimizer", "adagrad"]),
        ("unknown schedule", ["--lr-schedule", "linear"], ["--lr-schedule", "linear"]),
        ("warm-up beyond epochs", ["--warmup-epochs", "1.5"], ["--warmup-epochs", "beyond --epochs 1"]),
        ("decay rate without schedule", ["--lr-decay-rate", "0.5"],
         ["--lr-decay-rate", "without --lr-schedule step or exponential"]),
        ("decay epochs without schedule", ["--lr-decay-epochs", "2"],
         ["--lr-decay-epochs", "without"]),
        ("decay rate with cosine", ["--lr-schedule", "cosine", "--lr-decay-rate", "0.5"],
         ["--lr-decay-rate", "without"]),
        ("lr-min without cosine", ["--lr-schedule", "step", "--lr-min", "0.001"],
         ["--lr-min", "without --lr-schedule cosine"]),
        ("lr-min above the rate", ["--lr-schedule", "cosine", "--lr-min", "0.5"],
         ["--lr-min", "above --learning-rate"]),
        ("negative lr-min", ["--lr-schedule", "cosine", "--lr-min", "-1"], ["--lr-min"])):
    expect_error(label, ["--data-folder", good] + args, *needles)
    q = T.run(["train", "--data-folder", good] + args + base)
    T.check(q.returncode == 2, f"{label}: exit {q.returncode}, expected 2 (a usage error)")
expect_error("unknown flag", ["--data-folder", good, "--bogus", "1"], "--bogus")
expect_error("missing value", ["--data-folder", good, "--seed"], "--seed")
expect_error("bad choice", ["--data-folder", good, "--device", "tpu"], "--device", "tpu")
cfg = os.path.join(d, "c.json")
# Configs that must fail, each with the text its one line must hold. JSON
# types: null, an object, a number where a string goes, a string where a
# boolean goes; the message names the type the key takes.
for label, text, needle in (("unknown key", '{"batch_size": 5, "colour": 1}', '"colour"'),
                            ("bad json", '{"batch_size": 5,', "JSON"),
                            ("wrong type", '{"epochs": "many"}', '"epochs"'),
                            ("fraction for int", '{"epochs": 1.5}', '"epochs"'),
                            ("out of range", '{"learning_rate": 0}', '"learning_rate"'),
                            ("null bool", '{"overlap": null}', "expected true or false"),
                            ("null int", '{"epochs": null}', "expected an integer"),
                            ("object float", '{"learning_rate": {}}', "expected a number"),
                            ("number for a path", '{"outputs": 5}', "expected a string"),
                            ("string for a bool", '{"scale_lr": "maybe"}', '"scale_lr"'),
                            ("config not a string", '{"config": 5}', "expected a string"),
                            ("duplicate key", '{"epochs": 1, "seed": 2, "epochs": 3}',
                             'duplicate key "epochs"')):
    open(cfg, "w").write(text)
    expect_error("config " + label, ["--data-folder", good, "--config", cfg], cfg, needle)
expect_error("missing config", ["--config", os.path.join(d, "none.json")], "none.json")
# A folder given as the config: the read error, not a JSON syntax error at byte 0.
expect_error("config is a folder", ["--data-folder", good, "--config", d], d, "Is a directory")
# Empty folder flags name the flag (an empty path was a bare ": cannot create folder").
for flag in ("--outputs", "--logs"):
    p = T.run(["train", "--data-folder", good] + base + [flag, ""])
    err = p.stderr.strip()
    T.check(p.returncode == 2 and err == f"tfdist: error: {flag}: empty", f"empty {flag}: {err!r}")
# A flag where a value should be: "--outputs --epochs 1" is a missing value,
# not a folder named "--epochs" and a stray "1".
expect_error("flag as value", ["--data-folder", good, "--outputs", "--epochs", "1"],
             "--outputs: missing value")

# Symbolic links that loop back (8 links to the parent: 8^8 folders to a depth-
# limited walk, which hung): each folder is searched once, and the run trains.
loop = os.path.join(d, "loop")
shutil.copytree(good, loop)
os.makedirs(os.path.join(loop, "sub"))
for c in "abcdefgh":
    os.symlink("..", os.path.join(loop, "sub", c))
try:
    p = T.run(["train", "--data-folder", loop] + base[:4] + ["--outputs", os.path.join(d, "loop-out"),
                                                           "--logs", os.path.join(d, "logs")],
              timeout=60)
    T.check(p.returncode == 0, f"looping symlinks: {p.stderr.strip()}")
except subprocess.TimeoutExpired:
    T.check(False, "looping symlinks under --data-folder: no answer in 60 s")

# No --data-folder and no default data set installed (hidden by a tmpfs in a
# private mount namespace; skipped where that is not allowed): SPEC says the
# flag is then required, and the error says so, for train and eval.
default = [l.split("(default: ")[1].rstrip(")") for l in T.run(["train", "--help"]).stdout.splitlines()
           if l.strip().startswith("--data-folder ")][0]
hide = f"mount -t tmpfs tmpfs {os.path.dirname(default)} && exec \"$@\""
probe = subprocess.run(["unshare", "-m", "sh", "-c", hide, "sh", "true"], capture_output=True)
if probe.returncode == 0:
    for cmd in (["train"] + base, ["eval", "--model", os.path.join(out, "model")]):
        p = subprocess.run(["unshare", "-m", "sh", "-c", hide, "sh", T.TFDIST] + cmd,
                           capture_output=True, text=True, timeout=60)
        lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
        T.check(p.returncode == 2 and len(lines) == 1 and
                lines[0].startswith("tfdist: error: --data-folder: required") and default in lines[0],
                f"{cmd[0]} without a default data set: {p.returncode} {lines}")
else:
    print("skipped: no default data set check (unshare -m not allowed here)")

# Under mpirun every rank sees the same bad flag or config: one line, not one per rank.
for label, args in (("flag", ["--batch-size", "0"]), ("config", ["--config", cfg])):
    p = T.run(["train", "--data-folder", good] + args + base[4:], mpi=2)
    errs = [l for l in p.stderr.splitlines() if l.startswith("tfdist: error:")]
    T.check(p.returncode != 0 and len(errs) == 1, f"mpirun, bad {label}: error lines {errs}")

T.check(hashlib.sha256(open(model, "rb").read()).hexdigest() == digest,
        "a failed run changed the previous model")
T.done()
