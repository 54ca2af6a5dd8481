"""Writes never follow links (issue 18, part 3). Symbolic links planted at
outputs/.tfdist.lock, outputs/metrics.jsonl and logs/rank-0.log, pointing at
a victim file outside: the run refuses with one error line naming the link,
exit non-zero, and the victim is byte-identical. Links planted in a `model
download --to` folder (at model.h5, metadata.json, and at the temp names
<name>.tmp.<pid> the next few hundred pids would use): the download writes
its own real files there and every victim is byte-identical. Two downloads
of different versions into one folder, 25 times: never a mixed pair. Two
runs sharing one --logs at once: the second is refused and the first's log
holds only its own run."""
import hashlib
import json
import os
import subprocess
import time

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
VICTIM_TEXT = b"victim: must stay byte-identical\n"


def victim(name):
    p = os.path.join(d, "victims", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(VICTIM_TEXT)
    return p


def intact(p):
    with open(p, "rb") as f:
        return f.read() == VICTIM_TEXT


def train(out, logs, extra=()):
    return T.run(["train", "--data-folder", data, "--outputs", out, "--logs", logs, "--progress",
                  "off", "--batch-size", "25", "--first-layer-neurons", "64",
                  "--second-layer-neurons", "32", "--epochs", "1"] + list(extra), timeout=300)


# 1. Links in --outputs and --logs: refused, victims untouched.
for rel in ("out/.tfdist.lock", "out/metrics.jsonl", "logs/rank-0.log"):
    case = os.path.join(d, "plant-" + rel.replace("/", "-"))
    link = os.path.join(case, rel)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    v = victim(rel.replace("/", "-"))
    os.symlink(v, link)
    p = train(os.path.join(case, "out"), os.path.join(case, "logs"))
    T.check(C.one_error_line(p) and link in p.stderr and "symbolic link" in p.stderr,
            f"{rel}: rc {p.returncode}: {p.stderr.strip()[-500:]}")
    T.check(intact(v), f"{rel}: the victim was written through the link")
    T.check(os.path.islink(link), f"{rel}: the link itself was replaced")

# 2. A registry with two versions of different weights.
reg = os.path.join(d, "registry")
shas = {}
for seed in ("1", "2"):
    out = os.path.join(d, "train-" + seed)
    p = train(out, os.path.join(d, "logs-" + seed), ["--seed", seed])
    T.check(p.returncode == 0, f"train seed {seed}: {p.stderr.strip()[-300:]}")
    q = T.run(["model", "register", "--registry", reg, "--name", "m", "--path",
               os.path.join(out, "model")])
    T.check(q.returncode == 0, f"register seed {seed}: {q.stderr.strip()}")
    with open(os.path.join(out, "model", "model.h5"), "rb") as f:
        shas[q.stdout.strip()] = hashlib.sha256(f.read()).hexdigest()


def last_pid():
    with open("/proc/sys/kernel/ns_last_pid") as f:
        return int(f.read())


# 3. A --to folder with links at the final names and at the next pids' temp names.
to = os.path.join(d, "to")
os.makedirs(to)
planted = {}
for name in ("model.h5", "metadata.json"):
    planted[os.path.join(to, name)] = victim("to-" + name)
base = last_pid()
for pid in range(base + 1, base + 400):
    for name in ("model.h5", "metadata.json"):
        planted[os.path.join(to, f"{name}.tmp.{pid}")] = victim(f"to-{name}.tmp.{pid}")
for link, v in planted.items():
    os.symlink(v, link)
q = T.run(["model", "download", "--registry", reg, "m:1", "--to", to])
T.check(q.returncode == 0, f"download into a planted --to: rc {q.returncode}: {q.stderr.strip()}")
for name in ("model.h5", "metadata.json"):
    p = os.path.join(to, name)
    T.check(os.path.isfile(p) and not os.path.islink(p), f"--to/{name} is not tfdist's own file")
bad = [v for v in planted.values() if not intact(v)]
T.check(not bad, f"download wrote through {len(bad)} planted links: {bad[:3]}")
T.check(all(os.path.realpath(os.path.join(r, f)).startswith(os.path.realpath(to) + "/")
            for r, _, fs in os.walk(to) for f in fs if not os.path.islink(os.path.join(r, f))),
        "a file outside --to")


# 4. Two downloads of different versions into one folder at once, 25 times.
def pair_ok(folder):
    with open(os.path.join(folder, "metadata.json")) as f:
        meta = json.load(f)
    with open(os.path.join(folder, "model.h5"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return meta.get("sha256") == sha and sha in shas.values()


mixed = 0
for i in range(25):
    folder = os.path.join(d, f"race-{i}")
    procs = [subprocess.Popen([T.TFDIST, "model", "download", "--registry", reg, ref, "--to",
                               folder], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ref in ("m:1", "m:2")]
    for pr in procs:
        out, err = pr.communicate(timeout=60)
        T.check(pr.returncode == 0, f"race {i}: download failed: {err.strip()}")
    mixed += not pair_ok(folder)
T.check(mixed == 0, f"two downloads into one folder left a mixed pair in {mixed} of 25 tries")

# 5. Two runs sharing one --logs at once: the second is refused, the first's log is its own.
logs = os.path.join(d, "shared-logs")
first = subprocess.Popen([T.TFDIST, "train", "--data-folder", data, "--outputs",
                          os.path.join(d, "run-a"), "--logs", logs, "--progress", "off",
                          "--batch-size", "25", "--first-layer-neurons", "64",
                          "--second-layer-neurons", "32", "--epochs", "400"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
log0 = os.path.join(logs, "rank-0.log")
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not (os.path.exists(log0) and "run " in open(log0).read()):
    time.sleep(0.05)
p = train(os.path.join(d, "run-b"), logs)
first.terminate()
first.communicate(timeout=60)
T.check(C.one_error_line(p) and log0 in p.stderr and "in use by another tfdist run" in p.stderr,
        f"second run on a shared --logs: rc {p.returncode}: {p.stderr.strip()[-400:]}")
ids = {line.split()[-1] for line in open(log0) if " run run-" in line}
T.check(len(ids) == 1, f"rank-0.log holds lines of {len(ids)} runs: {sorted(ids)}")
C.finish(d)
