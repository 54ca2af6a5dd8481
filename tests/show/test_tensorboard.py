"""tfdist train --tensorboard, read back by TensorBoard's own EventAccumulator:
every scalar equals the metrics.jsonl row of the same name at the same step
(as float32), and every row has its scalar, for a 1-rank run, a 2-rank
mpirun run, a resumed run (two files, one series: the abandoned epoch of the
first run is dropped), a finished run extended from its last checkpoint
(whose first final_acc stays) and a 3-trial tune (one subfolder per trial). The
first record is file_version "brain.Event:2"; a file cut mid-record (a
killed run) still reads up to its last whole record; the TF_CONFIG
evaluator's eval_* scalars land in <DIR>/eval; a bad --tensorboard is a
one-line error before anything trains."""
import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess

import showenv

showenv.reexec(["tensorboard", "numpy"])

import numpy as np  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator as ea  # noqa: E402
from tensorboard.backend.event_processing import event_file_loader  # noqa: E402

import idxgen  # noqa: E402
import tfdtest as T  # noqa: E402

RUNTIME_FIGURES = {"samples_per_s", "step_time_ms", "data_wait_s", "learning_rate"}


def scalars(folder):
    acc = ea.EventAccumulator(folder, size_guidance={ea.SCALARS: 0})  # 0: keep every value
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(v):
    return float(np.float32(v)) if v is not None else math.nan


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare(what, folder, rows):
    """TensorBoard's scalars in folder against metrics.jsonl rows, both ways."""
    got = scalars(folder)
    want = {}
    for r in rows:
        want.setdefault(r["name"], []).append((r["step"], f32(r["value"])))
    T.check(set(got) == set(want), f"{what}: tags {sorted(got)} != metrics {sorted(want)}")
    for name, series in want.items():
        tb = sorted(got.get(name, []))
        exp = sorted(series)
        ok = len(tb) == len(exp) and all(s1 == s2 and same(v1, v2)
                                         for (s1, v1), (s2, v2) in zip(tb, exp))
        T.check(ok, f"{what}: {name}: tensorboard {tb} != metrics.jsonl {exp}")
    return got


def event_files(folder):
    return sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))


def check_file(what, path):
    name = os.path.basename(path)
    host = socket.gethostname().replace("/", "_")
    T.check(re.fullmatch(r"events\.out\.tfevents\.\d{10}\." + re.escape(host) + r"\.\d+\.tfdist",
                         name) is not None, f"{what}: file name {name}")
    events = list(event_file_loader.EventFileLoader(path).Load())
    T.check(len(events) > 0 and events[0].file_version == "brain.Event:2",
            f"{what}: first record {events[0] if events else None}")
    return events


d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(21), 400, 100, gz=False, nested="")
common = ["--data-folder", data, "--batch-size", "20", "--progress", "off"]


def train(tag, extra, mpi=0):
    out = os.path.join(d, tag)
    p = T.run(["train", "--outputs", out, "--logs", os.path.join(d, tag + "-logs")] + common +
              extra, mpi=mpi, timeout=300)
    T.check(p.returncode == 0, f"{tag}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    return out


# 1 rank
tb1 = os.path.join(d, "tb1")
out1 = train("one", ["--epochs", "2", "--tensorboard", tb1])
files = event_files(tb1)
T.check(len(files) == 1, f"1 rank: {files}")
if files:
    check_file("1 rank", files[0])
got = compare("1 rank", tb1, T.metrics(out1))
T.check(RUNTIME_FIGURES <= set(got), f"1 rank: missing {RUNTIME_FIGURES - set(got)}")
T.check([s for s, _ in got.get("loss", [])] == [20, 40], f"1 rank: loss steps {got.get('loss')}")

# 2 ranks under mpirun: rank 0 alone writes
tb2 = os.path.join(d, "tb2")
out2 = train("two", ["--epochs", "2", "--tensorboard", tb2], mpi=2)
T.check(len(event_files(tb2)) == 1, f"2 ranks: {event_files(tb2)}")
got = compare("2 ranks", tb2, T.metrics(out2))
T.check([s for s, _ in got.get("loss", [])] == [10, 20], f"2 ranks: loss steps {got.get('loss')}")

# Resumed: 3 epochs with a checkpoint at 2, then resumed from it to epoch 4.
# metrics.jsonl drops the first run's epoch 3; TensorBoard must too.
tbr = os.path.join(d, "tbr")
outr = train("resume", ["--epochs", "3", "--checkpoint-every", "2", "--tensorboard", tbr])
first = scalars(tbr)
train("resume", ["--epochs", "4", "--checkpoint-every", "2", "--tensorboard", tbr,
                 "--resume-from", os.path.join(outr, "checkpoints", "ckpt-epoch-2.h5")])
files = event_files(tbr)
T.check(len(files) == 2, f"resume: {len(files)} event files, want 2")
for f in files:
    check_file("resume", f)
got = compare("resume", tbr, T.metrics(outr))
T.check([s for s, _ in got.get("loss", [])] == [20, 40, 60, 80],
        f"resume: loss steps {got.get('loss')}")
old3 = dict(first.get("loss", [])).get(60)
new3 = dict(got.get("loss", [])).get(60)
T.check(old3 is not None and new3 is not None, "resume: no epoch-3 loss")

# A finished run extended from its last checkpoint (2 epochs, then to 3): the
# first run's final_acc stays in TensorBoard at the step where it ended, as
# the README says (metrics.jsonl drops it); all else matches.
tbx = os.path.join(d, "tbx")
outx = train("extend", ["--epochs", "2", "--checkpoint-every", "2", "--tensorboard", tbx])
first_final = T.metric(outx, "final_acc")
train("extend", ["--epochs", "3", "--checkpoint-every", "2", "--tensorboard", tbx,
                 "--resume-from", os.path.join(outx, "checkpoints", "ckpt-epoch-2.h5")])
rows = T.metrics(outx) + [{"name": "final_acc", "step": 40, "value": v} for v in first_final]
got = compare("extend", tbx, rows)
T.check(len(got.get("final_acc", [])) == 2, f"extend: final_acc {got.get('final_acc')}")

# A file cut mid-record: TensorBoard skips the torn record, reads the rest.
if event_files(tb1):
    cut = os.path.join(d, "tbcut")
    os.makedirs(cut)
    src = event_files(tb1)[0]
    dst = os.path.join(cut, os.path.basename(src))
    shutil.copy(src, dst)
    whole = check_file("cut", dst)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as f:
        f.truncate(size - 7)  # into the last record's data
    torn = list(event_file_loader.EventFileLoader(dst).Load())
    T.check(len(torn) == len(whole) - 1, f"cut: {len(torn)} records read, want {len(whole) - 1}")
    rows = [r for r in T.metrics(out1) if r["name"] != "final_acc"]  # the last record
    compare("cut", cut, rows)

# 3-trial tune: one TensorBoard run (subfolder) per trial.
tbt = os.path.join(d, "tbt")
tout = os.path.join(d, "tune")
p = T.run(["tune", "--trials", "3", "--concurrent", "3", "--outputs", tout, "--tensorboard", tbt,
           "--", "--data-folder", data, "--epochs", "2", "--seed", "3"], timeout=300)
T.check(p.returncode == 0, f"tune: exit {p.returncode}: {p.stderr.strip()[-400:]}")
runs = sorted(os.listdir(tbt)) if os.path.isdir(tbt) else []
T.check(runs == ["trial-01", "trial-02", "trial-03"], f"tune: runs {runs}")
for r in runs:
    T.check(len(event_files(os.path.join(tbt, r))) == 1, f"tune {r}: files")
    compare(f"tune {r}", os.path.join(tbt, r), T.metrics(os.path.join(tout, r, "outputs")))

# The TF_CONFIG evaluator task beside a run: its eval_* scalars go to <DIR>/eval.
tbe = os.path.join(d, "tbe")
oute = os.path.join(d, "evalrun")
ev_env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"chief": ["127.0.0.1:1"]},
                                                "task": {"type": "evaluator", "index": 0}}))
ev_args = ["train", "--outputs", oute, "--logs", os.path.join(d, "ev-logs"), "--epochs", "2",
           "--checkpoint-every", "1", "--tensorboard", tbe, "--timeout", "60"] + common
ev = subprocess.Popen(["timeout", "-k", "5", "120", T.TFDIST] + ev_args, env=ev_env,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
train("evalrun", ["--epochs", "2", "--checkpoint-every", "1", "--tensorboard", tbe])
ev_out, ev_err = ev.communicate(timeout=150)
T.check(ev.returncode == 0, f"evaluator: exit {ev.returncode}: {ev_err.strip()[-400:]}")
erows = T.metrics(os.path.join(oute, "eval"))
got = compare("evaluator", os.path.join(tbe, "eval"), erows)
T.check({"eval_accuracy", "eval_loss", "final_eval_accuracy"} <= set(got),
        f"evaluator: tags {sorted(got)}")
compare("evaluator's run", tbe, T.metrics(oute))

# Bad --tensorboard: a file where the folder should be; a folder we may not write.
blocker = os.path.join(d, "blocker")
open(blocker, "w").close()
for bad in (blocker, os.path.join(blocker, "sub")):
    out = os.path.join(d, "bad")
    p = T.run(["train", "--outputs", out, "--logs", os.path.join(d, "bad-logs"), "--epochs", "1",
               "--tensorboard", bad] + common)
    lines = p.stderr.strip().splitlines()
    T.check(p.returncode != 0 and len(lines) >= 1 and "error: --tensorboard: " + blocker in lines[-1],
            f"--tensorboard {bad}: exit {p.returncode}: {p.stderr.strip()}")
    T.check(not os.path.exists(os.path.join(out, "model", "model.h5")), "bad: a model was written")
T.done()
