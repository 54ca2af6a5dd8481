"""--resume-from auto, one process: a fresh start where <outputs>/checkpoints
has no checkpoint (none, or only a `latest` pointer and a killed writer's temp
file), the latest checkpoint where there is one (a finished run too), a
one-line error where the folder cannot be read; run.json's config keeps
"auto", so it runs again as a --config file anywhere."""
import json
import os

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
AUTO = ["--resume-from", "auto", "--checkpoint-every", "1"]


def run_json(out):
    with open(os.path.join(out, "run.json")) as f:
        return json.load(f)


def epochs_of(out, name="validation_acc"):
    return [r["epoch"] for r in T.metrics(out) if r["name"] == name]


# Only a `latest` pointer (to a file that is gone) and a temp file: no
# checkpoint, so a fresh start, and metrics.jsonl starts over.
out = os.path.join(d, "out")
os.makedirs(os.path.join(out, "checkpoints"))
with open(os.path.join(out, "checkpoints", "latest"), "w") as f:
    f.write("ckpt-epoch-7.h5\n")
open(os.path.join(out, "checkpoints", "ckpt-epoch-1.h5.tmp.99999"), "w").close()
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    f.write('{"name":"validation_acc","value":0.5,"epoch":9,"step":1,"time":0}\n')
p = C.train(d, data, out, AUTO + ["--epochs", "2"])
T.check(p.returncode == 0 and "--resume-from auto: no checkpoint in" in p.stdout,
        f"auto with no checkpoint: exit {p.returncode}: {p.stdout[-300:]} {p.stderr.strip()}")
T.check(epochs_of(out) == [1, 2], f"fresh start: metrics.jsonl epochs {epochs_of(out)}")
T.check(run_json(out)["config"]["resume_from"] == "auto" and "resumed_from" not in run_json(out),
        f"fresh start: run.json config resume_from {run_json(out)['config']['resume_from']!r}")

# Checkpoints there: the newest one, metrics.jsonl continued.
p = C.train(d, data, out, AUTO + ["--epochs", "3"])
T.check(p.returncode == 0 and "tfdist: resuming from" in p.stdout and "ckpt-epoch-2.h5" in p.stdout,
        f"auto with checkpoints: exit {p.returncode}: {p.stdout[-300:]} {p.stderr.strip()}")
rec = run_json(out)
T.check(rec.get("resumed_from", {}).get("epoch") == 2 and epochs_of(out) == [1, 2, 3],
        f"resumed: {rec.get('resumed_from')}, epochs {epochs_of(out)}")
T.check(rec["config"]["resume_from"] == "auto",
        f"resumed: run.json config resume_from {rec['config']['resume_from']!r}, expected 'auto'")

# That config, as a --config file, for a new folder: a fresh start there.
cfg = os.path.join(d, "rerun.json")
with open(cfg, "w") as f:
    json.dump(rec["config"], f)
out2 = os.path.join(d, "out2")
p = T.run(["train", "--config", cfg, "--outputs", out2])
T.check(p.returncode == 0 and epochs_of(out2) == [1, 2, 3],
        f"run.json's config in a new folder: exit {p.returncode}: {p.stderr.strip()}")

# A finished run: resumed at its last epoch, nothing left to train, the same final_acc.
final = T.metric(out, "final_acc")
p = C.train(d, data, out, AUTO + ["--epochs", "3"])
T.check(p.returncode == 0 and T.metric(out, "final_acc") == final and epochs_of(out) == [1, 2, 3],
        f"finished run: exit {p.returncode}, final_acc {T.metric(out, 'final_acc')} vs {final}")

# checkpoints is not a folder: one line naming it, before anything is written.
out3 = os.path.join(d, "out3")
os.makedirs(out3)
open(os.path.join(out3, "checkpoints"), "w").close()
p = C.train(d, data, out3, AUTO + ["--epochs", "1"])
T.check(C.one_error_line(p) and "checkpoints" in p.stderr and not os.path.exists(
        os.path.join(out3, "run.json")), f"checkpoints a file: exit {p.returncode}: {p.stderr}")

C.finish(d)
