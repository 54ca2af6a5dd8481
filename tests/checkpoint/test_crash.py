"""Crash safety: kill -9 during a run that checkpoints every epoch (with
TFDIST_FAULT_CKPT_SLOW_MS stretching each save), then: every checkpoint file
left is loadable, `latest` names one of them, and --resume-from latest
finishes with weights bit-identical to an uninterrupted run.
20 kills land at random moments of the run. Their share inside a save
depends on load (the reference run's duration times them), so further kills
are aimed at saves by watching for the checkpoint's temp file: at least 3
kills must land mid-write, one of them before the temp file has its bytes
and one after (written, not yet renamed)."""
import json
import os
import random
import re
import signal
import subprocess
import time

import ckhelp as C
import tfdtest as T

RANDOM_TRIALS, MAX_AIMED, MIN_MID_WRITE, EPOCHS = 20, 12, 3, 6
TMP_RE = re.compile(r"ckpt-epoch-[0-9]+\.h5\.tmp\.[0-9]+(\.[A-Za-z0-9]{6})?")  # base/fsutil.h fs_tmp_create
d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
slow = {"TFDIST_FAULT_CKPT_SLOW_MS": "25"}
common = ["--epochs", str(EPOCHS), "--checkpoint-every", "1", "--keep-checkpoints", "2",
          "--optimizer", "momentum", "--learning-rate", "0.002"]

ref = os.path.join(d, "ref")
t0 = time.monotonic()
p = C.train(d, data, ref, common, env=slow)
duration = time.monotonic() - t0
T.check(p.returncode == 0, f"reference run failed: {p.stderr.strip()}")
ref_model = os.path.join(ref, "model", "model.h5")


def loadable(path):
    q = T.run(["eval", "--model", path, "--data-folder", data, "--json"])
    return q.returncode == 0 and json.loads(q.stdout)["samples"] == 200


def kill_after(proc, seconds):
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)


def tmp_sizes(ck):
    """Sizes of the checkpoint temp files in ck (empty when there is none)."""
    sizes = []
    for e in os.scandir(ck) if os.path.isdir(ck) else []:
        try:
            if TMP_RE.fullmatch(e.name):
                sizes.append(e.stat().st_size)
        except OSError:  # renamed between the listing and the stat
            pass
    return sizes


def kill_in_write(proc, ck, written):
    """Kills proc once a checkpoint temp file is empty (written=False) or has
    its bytes (written=True); each stays so for >= 25 ms under the fault switch."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any((s > 0) == written for s in tmp_sizes(ck)):
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)


def trial(name, kill):
    """One killed run, checked and resumed; returns the temp files' sizes it left."""
    out = os.path.join(d, name)
    args = [T.TFDIST] + C.train_args(d, data, out, common)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, **slow))
    kill(proc, os.path.join(out, "checkpoints"))
    proc.wait()
    ck = os.path.join(out, "checkpoints")
    names = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
    files = [n for n in names if n.startswith("ckpt-epoch-") and n.endswith(".h5")]
    left = tmp_sizes(ck)
    for n in files:
        T.check(loadable(os.path.join(ck, n)), f"{name}: {n} is not loadable")
    if "latest" in names:
        target = open(os.path.join(ck, "latest")).read().strip()
        T.check(target in files, f"{name}: latest names '{target}', files {files}")
    # Resume (or start over when the kill came before the first checkpoint).
    extra = common + (["--resume-from", "latest"] if files else [])
    q = C.train(d, data, out, extra)
    T.check(q.returncode == 0, f"{name}: resume failed: {q.stderr.strip()}")
    if q.returncode == 0:
        T.check(C.same_weights(ref_model, os.path.join(out, "model", "model.h5")),
                f"{name}: resumed weights differ from the uninterrupted run's")
        epochs = [r["epoch"] for r in T.metrics(out) if r["name"] == "validation_acc"]
        T.check(epochs == list(range(1, EPOCHS + 1)), f"{name}: metrics epochs {epochs}")
    return left


rng = random.Random(1234)
mid_write = 0
for i in range(RANDOM_TRIALS):
    delay = rng.uniform(0.1, 0.95) * duration
    mid_write += bool(trial(f"trial{i}", lambda proc, ck: kill_after(proc, delay)))
print(f"{mid_write} of {RANDOM_TRIALS} random kills left a checkpoint half-written")

# Aimed kills, alternating empty and written temp files, until both kinds
# and at least MIN_MID_WRITE mid-write kills in all have been seen.
seen, aimed = {False: 0, True: 0}, 0
while aimed < MAX_AIMED and (mid_write < MIN_MID_WRITE or not all(seen.values())):
    written = aimed % 2 == 1
    left = trial(f"aimed{aimed}", lambda proc, ck: kill_in_write(proc, ck, written))
    aimed += 1
    mid_write += bool(left)
    for s in left:
        seen[s > 0] += 1
print(f"{aimed} aimed kills; temp files left: {seen[False]} empty, {seen[True]} written")
T.check(mid_write >= MIN_MID_WRITE, f"only {mid_write} kills landed inside a checkpoint write")
T.check(seen[False] > 0, "no kill landed while a checkpoint temp file was still empty")
T.check(seen[True] > 0, "no kill landed between writing a checkpoint temp file and its rename")
C.finish(d)
