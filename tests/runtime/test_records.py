"""Run records stay strict JSON when training diverges: a loss that becomes
NaN or infinite is null in metrics.jsonl (a bare nan is not JSON, and a JSON
reader, the registry and --resume-from all dropped such rows), and run.json
parses too."""
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
T.check(p.returncode == 0, f"diverging run failed: {p.stderr.strip()}")
rows = []
for i, line in enumerate(open(os.path.join(out, "metrics.jsonl"))):
    try:
        rows.append(strict(line))
    except ValueError as e:
        T.check(False, f"metrics.jsonl line {i + 1} is not JSON: {e}: {line.strip()}")
losses = [r["value"] for r in rows if r["name"] == "loss"]
T.check(len(losses) == 2 and losses[-1] is None, f"the diverged loss should be null: {losses}")
T.check(all(r["value"] is None or np.isfinite(r["value"]) for r in rows), "a non-finite value")
try:
    run = strict(open(os.path.join(out, "run.json")).read())
    T.check(run["status"] == "Completed", f"run.json status {run['status']}")
except ValueError as e:
    T.check(False, f"run.json is not JSON: {e}")
T.done()
