"""No NaN is Completed (issue 18, part 4; Keras' TerminateOnNaN): the replay
`train --learning-rate 1000` ends Failed, exit 1, one error line naming the
epoch and step, and writes no model and no checkpoint; a resume that diverges
keeps the last good checkpoint, `latest` and model.h5 byte for byte; a model
or checkpoint with a NaN weight (and a valid checksum) is refused by eval,
predict, resume, `model register` and `serve`, naming the dataset. The same
replay on the TF_CONFIG parameter-server path ends Failed too."""
import hashlib
import json
import os
import shutil
import subprocess

import h5py
import numpy as np

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
# The replay: the tutorial's layers and batch; lr 1000 gives a NaN loss in epoch 1.
BIG = ["--first-layer-neurons", "300", "--second-layer-neurons", "100", "--batch-size", "100"]


def train(out, extra):
    args = ["train", "--data-folder", data, "--outputs", out, "--logs", os.path.join(out, "logs"),
            "--progress", "off", "--seed", "5", "--checkpoint-every", "1"] + BIG + extra
    return T.run(args, timeout=300)


def status(out):
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f).get("status")


def read(path):
    with open(path, "rb") as f:
        return f.read()


# 1. A fresh run that diverges.
out = os.path.join(d, "nan")
p = train(out, ["--epochs", "2", "--learning-rate", "1000"])
T.check(C.one_error_line(p) and p.returncode == 1 and "diverged at epoch 1, step " in p.stderr
        and "nan" in p.stderr, f"lr 1000: rc {p.returncode}: {p.stderr.strip()[-600:]}")
T.check(status(out) == "Failed", f"lr 1000: run.json status {status(out)}")
T.check(not os.path.exists(os.path.join(out, "model", "model.h5")), "lr 1000 wrote model.h5")
ck = os.path.join(out, "checkpoints")
T.check(not os.path.isdir(ck) or not [f for f in os.listdir(ck) if f.endswith(".h5")],
        f"lr 1000 wrote checkpoints: {os.listdir(ck) if os.path.isdir(ck) else ''}")

# 2. One good epoch, then a resume that diverges in epoch 2: nothing it had is
# touched. Resume refuses another --learning-rate, so the checkpoint's weights
# are made huge (finite, checksum recomputed): the next step overflows.
def rehash(f):
    g = f["model_weights"]
    flat = b"".join(np.array(g[l][l][k], "<f4").tobytes()
                    for l in ("dense", "dense_1", "dense_2") for k in ("kernel:0", "bias:0"))
    f.attrs["tfdist_weights_sha256"] = np.bytes_(hashlib.sha256(flat).hexdigest())


out = os.path.join(d, "good")
p = train(out, ["--epochs", "1", "--learning-rate", "0.01"])
T.check(p.returncode == 0, f"good run: {p.stderr.strip()[-600:]}")
model = os.path.join(out, "model", "model.h5")
ckpt1 = os.path.join(out, "checkpoints", "ckpt-epoch-1.h5")
huge = os.path.join(d, "huge-ckpt.h5")
shutil.copy(ckpt1, huge)
with h5py.File(ckpt1, "r+") as f:
    ds = f["model_weights/dense/dense/kernel:0"]
    ds[...] = np.array(ds) * np.float32(1e30)
    rehash(f)
keep = [model, ckpt1, os.path.join(out, "checkpoints", "latest")]
before = {f: read(f) for f in keep if os.path.exists(f)}
T.check(len(before) == 3, f"good run files: {sorted(before)}")
p = train(out, ["--epochs", "3", "--learning-rate", "0.01", "--resume-from", "auto"])
T.check(C.one_error_line(p) and p.returncode == 1 and "diverged at epoch 2, step " in p.stderr,
        f"diverging resume: rc {p.returncode}: {p.stderr.strip()[-600:]}")
T.check(status(out) == "Failed", f"diverging resume: run.json status {status(out)}")
for f, b in before.items():
    T.check(os.path.exists(f) and read(f) == b, f"diverging resume changed {f}")
T.check(not os.path.exists(os.path.join(out, "checkpoints", "ckpt-epoch-2.h5")),
        "diverging resume wrote ckpt-epoch-2.h5")


# 3. NaN weights with a valid checksum: refused everywhere, naming the dataset.
def with_nan(src, name):
    dst = os.path.join(d, name)
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f["model_weights/dense_1/dense_1/kernel:0"]
        w = np.array(ds)
        w[3, 2] = np.nan
        ds[...] = w
        rehash(f)
    return dst


NEEDLE = "model_weights/dense_1/dense_1/kernel:0: element 302 is nan"
nan_model = with_nan(model, "nan-model.h5")
nan_ckpt = with_nan(huge, "nan-ckpt.h5")
ONE_ROW = '{"data": [[' + ",".join(["0.5"] * 784) + ']]}'
for path in (nan_model, nan_ckpt):
    q = T.run(["eval", "--model", path, "--data-folder", data])
    T.check(C.one_error_line(q) and NEEDLE in q.stderr and path in q.stderr,
            f"eval {path}: rc {q.returncode}: {q.stderr.strip()[-600:]}")
    q = subprocess.run([T.TFDIST, "predict", "--model", path], input=ONE_ROW, capture_output=True,
                       text=True, timeout=60)
    T.check(C.one_error_line(q) and NEEDLE in q.stderr, f"predict {path}: {q.stderr.strip()[-600:]}")
    reg = os.path.join(d, "registry")
    q = T.run(["model", "register", "--registry", reg, "--name", "nan", "--path", path])
    T.check(C.one_error_line(q) and NEEDLE in q.stderr, f"register {path}: {q.stderr.strip()[-600:]}")
    T.check(not os.path.exists(os.path.join(reg, "nan")), f"register {path} left an entry")
    try:  # without the check, serve would start and answer from the NaN model
        q = T.run(["serve", "--model", path, "--port", "0"], timeout=20)
        T.check(C.one_error_line(q) and NEEDLE in q.stderr, f"serve {path}: {q.stderr.strip()[-600:]}")
    except subprocess.TimeoutExpired:
        T.check(False, f"serve {path}: started serving the NaN model")
q = T.run(["train", "--data-folder", data, "--outputs", os.path.join(d, "resume-nan"), "--logs",
           os.path.join(d, "logs"), "--progress", "off", "--seed", "5", "--epochs", "2",
           "--learning-rate", "0.01", "--resume-from", nan_ckpt] + BIG)
T.check(C.one_error_line(q) and NEEDLE in q.stderr, f"resume {nan_ckpt}: {q.stderr.strip()[-600:]}")

# 4. The parameter-server path (TF_CONFIG chief + worker + 1 ps): the chief and
# the worker both end Failed, exit 1, naming the epoch; no model is written.
import sys  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "collective"))
import tfcluster as TC  # noqa: E402
folder = os.path.join(d, "ps")
ps_data = TC.make_data(os.path.join(d, "ps-data"))  # 1200 samples: 6 steps of 2 x 100
c = TC.run_cluster(folder, TC.cluster_spec(1, 1, 1),
                   TC.train_args(folder, ps_data, ["--epochs", "2", "--learning-rate", "1000"] + BIG),
                   limit_s=60)
for t in c.tasks:
    if t.kind == "ps":
        continue
    T.check(t.rc == 1 and "diverged at epoch 1, step " in t.stderr(),
            f"ps path {t.name}: rc {t.rc}: {t.stderr().strip()[-400:]}")
T.check(status(os.path.join(folder, "outputs")) == "Failed", "ps path: run.json not Failed")
T.check(not os.path.exists(os.path.join(folder, "outputs", "model", "model.h5")),
        "ps path wrote model.h5")
C.finish(d)
