"""Crash safety: 20 trials of kill -9 at a random moment of a run that
checkpoints every epoch (with TFDIST_FAULT_CKPT_SLOW_MS stretching each save,
so most kills land inside one). After each kill, every checkpoint file left
is loadable, `latest` names one of them, and --resume-from latest finishes
with weights bit-identical to an uninterrupted run."""
import json
import os
import random
import signal
import subprocess
import time

import ckhelp as C
import tfdtest as T

TRIALS, EPOCHS = 20, 6
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


rng = random.Random(1234)
mid_write = 0
for trial in range(TRIALS):
    out = os.path.join(d, f"trial{trial}")
    args = [T.TFDIST, "train", "--data-folder", data, "--outputs", out, "--logs",
            os.path.join(d, "logs"), "--batch-size", "25", "--first-layer-neurons", "64",
            "--second-layer-neurons", "32", "--progress", "off", "--seed", "5"] + common
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, **slow))
    time.sleep(rng.uniform(0.1, 0.95) * duration)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ck = os.path.join(out, "checkpoints")
    names = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
    files = [n for n in names if n.startswith("ckpt-epoch-") and n.endswith(".h5")]
    mid_write += any(".tmp." in n for n in names)
    for n in files:
        T.check(loadable(os.path.join(ck, n)), f"trial {trial}: {n} is not loadable")
    if "latest" in names:
        target = open(os.path.join(ck, "latest")).read().strip()
        T.check(target in files, f"trial {trial}: latest names '{target}', files {files}")
    # Resume (or start over when the kill came before the first checkpoint).
    extra = common + (["--resume-from", "latest"] if files else [])
    q = C.train(d, data, out, extra)
    T.check(q.returncode == 0, f"trial {trial}: resume failed: {q.stderr.strip()}")
    if q.returncode == 0:
        T.check(C.same_weights(ref_model, os.path.join(out, "model", "model.h5")),
                f"trial {trial}: resumed weights differ from the uninterrupted run's")
        epochs = [r["epoch"] for r in T.metrics(out) if r["name"] == "validation_acc"]
        T.check(epochs == list(range(1, EPOCHS + 1)), f"trial {trial}: metrics epochs {epochs}")
print(f"{mid_write} of {TRIALS} kills left a checkpoint half-written")
# With each save stretched, a fair share of kills must have hit one mid-write.
T.check(mid_write >= 3, f"only {mid_write} kills landed inside a checkpoint write")
C.finish(d)
