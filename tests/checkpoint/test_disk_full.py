"""A full disk (a file-size limit, RLIMIT_FSIZE, with SIGXFSZ ignored: writes
fail with EFBIG as on a full file system) while a checkpoint or the model is
saved, or metrics.jsonl grows: one error line naming the file and the reason,
exit 1, no crash, no temp file left, the previous checkpoint and model
untouched, and metrics.jsonl whole rows only."""
import hashlib
import json
import os
import resource
import signal

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
out = os.path.join(d, "out")


def small(extra, limit=None, outputs=out):
    """Training with tiny layers (a ~110 kB checkpoint); limit caps file sizes."""
    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    import subprocess
    args = [T.TFDIST, "train", "--data-folder", data, "--outputs", outputs, "--logs",
            os.path.join(d, "logs"), "--batch-size", "25", "--first-layer-neurons", "16",
            "--second-layer-neurons", "8", "--progress", "off"] + extra
    return subprocess.run(args, capture_output=True, text=True, timeout=120,
                          preexec_fn=cap if limit else None)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


p = small(["--epochs", "2"])
T.check(p.returncode == 0, f"good run failed: {p.stderr.strip()}")
ckpt = os.path.join(out, "checkpoints", "ckpt-epoch-2.h5")
model = os.path.join(out, "model", "model.h5")
before = {ckpt: digest(ckpt), model: digest(model)}
size = os.path.getsize(ckpt)

# Files of 40..95% of a checkpoint's size fit run.json and metrics.jsonl but
# not the new checkpoint (the limit lands at different points of the write);
# the model is smaller, so --checkpoint-every 0 with more units fails at it.
cases = [(f"checkpoint, limit {f:.0%}", ["--epochs", "2", "--seed", "9"], int(size * f), "ckpt-epoch-2.h5")
         for f in (0.4, 0.7, 0.95)]
cases.append(("model", ["--epochs", "1", "--checkpoint-every", "0", "--first-layer-neurons", "40"],
              int(os.path.getsize(model) * 1.2), "model.h5"))
for label, extra, limit, name in cases:
    p = small(extra, limit)
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    T.check(p.returncode == 1 and len(lines) == 1 and lines[0].startswith("tfdist: error:"),
            f"{label}: exit {p.returncode}, stderr {p.stderr.strip()[:600]!r}")
    T.check(lines and name in lines[0] and "File too large" in lines[0],
            f"{label}: the error does not name {name} and the reason: {lines}")
    left = [n for r, _, fs in os.walk(out) for n in fs if ".tmp." in n]
    T.check(not left, f"{label}: temp files left: {left}")
    for path, h in before.items():
        T.check(digest(path) == h, f"{label}: {os.path.basename(path)} changed")
    T.check(json.load(open(os.path.join(out, "run.json")))["status"] == "Failed", f"{label}: run.json")
    q = T.run(["eval", "--model", ckpt, "--data-folder", data, "--json"])
    T.check(q.returncode == 0, f"{label}: the previous checkpoint does not load: {q.stderr.strip()}")

# metrics.jsonl outgrows the limit (3 kB: run.json, about 2.1 kB, fits; an
# epoch's rows are about 1 kB, 10 rows): the epoch whose rows do not fit is an error, and the file
# keeps whole rows, those of the epochs before it.
mout = os.path.join(d, "metrics-out")
p = small(["--epochs", "5", "--checkpoint-every", "0"], 3072, mout)
lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
T.check(p.returncode == 1 and len(lines) == 1 and "metrics.jsonl" in lines[0] and
        "File too large" in lines[0], f"metrics.jsonl full: exit {p.returncode}, {lines}")
try:
    rows = T.metrics(mout)
except ValueError as e:
    rows = []
    T.check(False, f"metrics.jsonl full: a partial row: {e}")
epochs = sorted({r["epoch"] for r in rows})
T.check(epochs and all(sum(r["epoch"] == e for r in rows) == 10 for e in epochs),
        f"metrics.jsonl full: epochs {epochs} not whole")
T.check(json.load(open(os.path.join(mout, "run.json")))["status"] == "Failed", "metrics.jsonl full: run.json")
C.finish(d)
