"""Run records stay strict JSON when training diverges: the run ends Failed
(issue 18), metrics.jsonl never holds a bare nan (not JSON: a JSON reader,
the registry and --resume-from all dropped such rows), and run.json parses
too. A new run into the folder removes temp files that a killed
save left behind (their writer is gone), and keeps a live writer's and
files that are not tfdist's."""
import json
import os

import numpy as np

import idxgen
import tfdtest as T


def strict(text):
    def bad(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(text, parse_constant=bad)


d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(6), 300, 100, gz=False, nested="")
out = os.path.join(d, "out")
p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs", os.path.join(d, "logs"),
           "--batch-size", "25", "--epochs", "2", "--progress", "off", "--learning-rate", "1000",
           "--optimizer", "momentum", "--momentum", "0.99"])
# Since issue 18 a diverged run ends Failed (test_nan.py): exit 1, and no
# non-finite row ever reaches metrics.jsonl; the records stay strict JSON.
T.check(p.returncode == 1 and "training diverged at epoch" in p.stderr,
        f"diverging run: rc {p.returncode}: {p.stderr.strip()}")
rows = []
for i, line in enumerate(open(os.path.join(out, "metrics.jsonl"))):
    try:
        rows.append(strict(line))
    except ValueError as e:
        T.check(False, f"metrics.jsonl line {i + 1} is not JSON: {e}: {line.strip()}")
T.check(all(r["value"] is None or np.isfinite(r["value"]) for r in rows), "a non-finite value")
try:
    run = strict(open(os.path.join(out, "run.json")).read())
    T.check(run["status"] == "Failed" and "diverged" in run.get("error", ""),
            f"run.json status {run['status']} error {run.get('error')!r}")
except ValueError as e:
    T.check(False, f"run.json is not JSON: {e}")

# Temp files of saves killed mid-write: a dead writer's go, a live one's stay.
def dead_pid():
    for pid in range(4000000, 3000000, -7):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
    raise RuntimeError("no free pid found")


dead = dead_pid()
stale = [os.path.join(out, "model", f"model.h5.tmp.{dead}"),
         os.path.join(out, f"metrics.jsonl.tmp.{dead}"),
         os.path.join(out, "checkpoints", f"ckpt-epoch-4.h5.tmp.{dead}"),
         os.path.join(out, f"metrics.jsonl.tmp.{dead}.a1B2c3")]  # fs_tmp_create's form
live = os.path.join(out, "model", f"model.h5.tmp.{os.getpid()}")
users = os.path.join(out, f"notes.txt.tmp.{dead}")  # not a file tfdist writes
for f in stale + [live, users]:
    os.makedirs(os.path.dirname(f), exist_ok=True)
    open(f, "wb").write(os.urandom(64))
p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs", os.path.join(d, "logs"),
           "--batch-size", "25", "--epochs", "2", "--progress", "off"])
T.check(p.returncode == 0, f"second run failed: {p.stderr.strip()}")
for f in stale:
    T.check(not os.path.exists(f), f"{f}: a dead writer's temp file was left")
T.check(os.path.exists(live), "a live writer's temp file was removed")
T.check(os.path.exists(users), "a file tfdist does not write was removed")
T.done()
