"""The model registry: register prints name:version with versions counting up
per name; metadata carries framework and version, resources, tags,
description, the run's metrics and id (a checkpoint's: its own epoch's), the
created time and the model's sha256 (checked against hashlib);
list/show/download work; 8 concurrent registrations get 8 distinct versions
and no broken entry; a modified file fails download's sha256 check; damaged
metadata is an error, never a crash; the root comes from --registry, then
TFDIST_REGISTRY, then ~/.tfdist/registry; bad input is one error line."""
import datetime
import hashlib
import json
import os
import subprocess

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
out = os.path.join(d, "out")
p = C.train(d, data, out, ["--epochs", "2", "--checkpoint-every", "1"])
T.check(p.returncode == 0, f"training failed: {p.stderr.strip()}")
model_dir = os.path.join(out, "model")
model_file = os.path.join(model_dir, "model.h5")
sha = hashlib.sha256(open(model_file, "rb").read()).hexdigest()
reg = os.path.join(d, "reg")
env_no_reg = {"TFDIST_REGISTRY": ""}


def tf(args, env=None):
    return T.run(args, env=dict(env_no_reg, **(env or {})))


p = tf(["model", "register", "--registry", reg, "--name", "tf-dnn-mnist", "--path", model_dir,
        "--cpu", "1", "--memory-gb", "0.5", "--tag", "area=mnist", "--tag", "owner=ml team",
        "--description", "Fashion DNN, 2 epochs"])
T.check(p.returncode == 0 and p.stdout.strip() == "tf-dnn-mnist:1", f"register: {p.stdout}{p.stderr}")
p = tf(["model", "show", "tf-dnn-mnist:1", "--registry", reg])
T.check(p.returncode == 0, f"show: {p.stderr}")
meta = json.loads(p.stdout) if p.returncode == 0 else {}
version = T.run(["--version"]).stdout.split()[-1]
run = json.load(open(os.path.join(out, "run.json")))
final = T.metric(out, "final_acc")[-1]
expect = {"id": "tf-dnn-mnist:1", "name": "tf-dnn-mnist", "version": 1, "framework": "tfdist",
          "framework_version": version, "resource_configuration": {"cpu": 1, "memory_in_gb": 0.5},
          "tags": {"area": "mnist", "owner": "ml team"}, "description": "Fashion DNN, 2 epochs",
          "run_id": run["id"], "sha256": sha, "size_bytes": os.path.getsize(model_file),
          "source_path": os.path.realpath(model_file), "model_file": "model.h5"}
for k, v in expect.items():
    T.check(meta.get(k) == v, f"metadata {k}: {meta.get(k)!r} != {v!r}")
T.check(meta.get("metrics", {}).get("final_acc") == final, f"metrics: {meta.get('metrics')}")
T.check(meta.get("architecture", {}).get("units") == [784, 64, 32, 10], "architecture")
created = datetime.datetime.strptime(meta.get("created_time", ""), "%Y-%m-%dT%H:%M:%SZ")
T.check(abs(created.timestamp() - meta["created_unix"] + 0) < 86400 * 2, "created_time")

# Root from TFDIST_REGISTRY, then HOME; --registry wins over the environment.
p = tf(["model", "register", "--name", "tf-dnn-mnist", "--path", model_file], env={"TFDIST_REGISTRY": reg})
T.check(p.stdout.strip() == "tf-dnn-mnist:2", f"env register: {p.stdout}{p.stderr}")
home = os.path.join(d, "home")
os.makedirs(home)
p = tf(["model", "register", "--name", "tf-dnn-mnist", "--path", model_dir], env={"HOME": home})
T.check(p.stdout.strip() == "tf-dnn-mnist:1" and
        os.path.isfile(os.path.join(home, ".tfdist/registry/tf-dnn-mnist/1/model.h5")),
        f"default root: {p.stdout}{p.stderr}")
p = tf(["model", "show", "tf-dnn-mnist", "--registry", reg], env={"TFDIST_REGISTRY": home})
T.check(p.returncode == 0 and json.loads(p.stdout)["id"] == "tf-dnn-mnist:2", "--registry wins")

# 8 concurrent registrations of one name: 8 distinct consecutive versions.
procs = [subprocess.Popen([T.TFDIST, "model", "register", "--registry", reg, "--name", "tf-dnn-mnist",
                           "--path", model_dir, "--tag", f"worker={i}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
         for i in range(8)]
ids = []
for pr in procs:
    o, e = pr.communicate(timeout=120)
    T.check(pr.returncode == 0, f"concurrent register failed: {e.strip()}")
    ids.append(o.strip())
T.check(sorted(ids, key=lambda s: int(s.split(":")[1])) == [f"tf-dnn-mnist:{v}" for v in range(3, 11)],
        f"concurrent ids: {ids}")
name_dir = os.path.join(reg, "tf-dnn-mnist")
T.check(sorted(n for n in os.listdir(name_dir) if not n.startswith(".")) ==
        sorted(str(v) for v in range(1, 11)), f"entries: {os.listdir(name_dir)}")
T.check(not [n for n in os.listdir(name_dir) if n.startswith(".staging")], "staging folders left")
workers = set()
for v in range(1, 11):
    m = json.load(open(os.path.join(name_dir, str(v), "metadata.json")))
    h = hashlib.sha256(open(os.path.join(name_dir, str(v), "model.h5"), "rb").read()).hexdigest()
    T.check(m["version"] == v and m["id"] == f"tf-dnn-mnist:{v}" and m["sha256"] == h == sha,
            f"entry {v} broken")
    workers.add(m["tags"].get("worker"))
T.check(workers >= {str(i) for i in range(8)}, f"worker tags {workers}")

# list, show newest, download (verified), eval of the download.
p = tf(["model", "list", "--registry", reg, "--json"])
T.check(p.returncode == 0 and [e["id"] for e in json.loads(p.stdout)] ==
        [f"tf-dnn-mnist:{v}" for v in range(1, 11)], "list --json")
p = tf(["model", "list", "--registry", reg])
T.check(p.returncode == 0 and "tf-dnn-mnist:10" in p.stdout and f"{final:.4f}" in p.stdout, "list text")
p = tf(["model", "list", "--registry", reg, "--json=off"])
T.check(p.returncode == 0 and p.stdout.startswith("id "), f"list --json=off printed JSON: {p.stdout[:40]!r}")
p = tf(["model", "show", "tf-dnn-mnist", "--registry", reg])
T.check(json.loads(p.stdout)["version"] == 10, "show NAME gives the newest")
dl = os.path.join(d, "dl")
p = tf(["model", "download", "tf-dnn-mnist:3", "--to", dl, "--registry", reg])
T.check(p.returncode == 0 and "verified" in p.stdout, f"download: {p.stderr}")
T.check(open(os.path.join(dl, "model.h5"), "rb").read() == open(model_file, "rb").read(),
        "downloaded bytes differ")
T.check(json.load(open(os.path.join(dl, "metadata.json")))["id"] == "tf-dnn-mnist:3", "downloaded metadata")
p = tf(["eval", "--model", dl, "--data-folder", data, "--json"])
T.check(p.returncode == 0 and json.loads(p.stdout)["accuracy"] == final, "eval of the download")

# Registering a downloaded copy carries the run's metrics and id forward.
p = tf(["model", "register", "--registry", reg, "--name", "copy", "--path", dl])
m = json.loads(tf(["model", "show", "copy:1", "--registry", reg]).stdout) if p.returncode == 0 else {}
T.check(m.get("run_id") == run["id"] and m.get("metrics", {}).get("final_acc") == final,
        f"re-registered download: {p.stderr.strip()} {m.get('run_id')}")

# A checkpoint registers with its own epoch's metrics and run, not the metrics
# of the whole run whose outputs folder holds it (epoch 2's final_acc).
ck1 = os.path.join(out, "checkpoints", "ckpt-epoch-1.h5")
p = tf(["model", "register", "--registry", reg, "--name", "ckpt", "--path", ck1])
m = json.loads(tf(["model", "show", "ckpt:1", "--registry", reg]).stdout) if p.returncode == 0 else {}
epoch1 = {r["name"]: r["value"] for r in T.metrics(out) if r["epoch"] == 1}
mm = m.get("metrics", {})
# The loss within 1 ulp: cJSON 1.7.15 prints a double with 15 digits when they
# read back within its epsilon, so the file's JSON can be 1 ulp off the exact
# value metrics.jsonl holds (2.26198405345281 against 2.2619840534528097).
def near(a, b):
    return a is not None and b is not None and abs(a - b) <= 4e-16 * abs(b)


T.check(p.returncode == 0 and mm.get("validation_acc") == epoch1["validation_acc"] and
        near(mm.get("loss"), epoch1["loss"]) and "final_acc" not in mm,
        f"checkpoint metrics: {p.stderr.strip()} {mm} vs epoch 1 {epoch1}")
T.check(m.get("checkpoint", {}).get("epoch") == 1 and m.get("run_id") == run["id"],
        f"checkpoint entry: {m.get('checkpoint')} {m.get('run_id')}")

# A later run in the same --outputs that fails leaves the model of the run
# before it, while run.json and metrics.jsonl now describe the failed run: the
# entry takes the model's own run (its id and final metrics), not the folder's.
out2 = os.path.join(d, "out2")
p = C.train(d, data, out2, ["--epochs", "1", "--checkpoint-every", "0"])
run_a, final_a = json.load(open(os.path.join(out2, "run.json")))["id"], T.metric(out2, "final_acc")[-1]
open(os.path.join(out2, "checkpoints"), "w").write("not a folder")  # the next run fails at its save
p = C.train(d, data, out2, ["--epochs", "3", "--checkpoint-every", "2", "--seed", "8"])
T.check(p.returncode != 0 and json.load(open(os.path.join(out2, "run.json")))["status"] == "Failed",
        f"the failing run did not fail: {p.returncode}")
p = tf(["model", "register", "--registry", reg, "--name", "rerun", "--path", os.path.join(out2, "model")])
m = json.loads(tf(["model", "show", "rerun:1", "--registry", reg]).stdout) if p.returncode == 0 else {}
T.check(m.get("run_id") == run_a and m.get("metrics", {}).get("final_acc") == final_a and
        m.get("run_status") != "Failed",
        f"model of an earlier run: {p.stderr.strip()} run_id {m.get('run_id')} (want {run_a}), "
        f"status {m.get('run_status')}, metrics {m.get('metrics')} (want final_acc {final_a})")

# A registry file that no longer matches its sha256.
with open(os.path.join(name_dir, "2", "model.h5"), "r+b") as f:
    f.seek(5000)
    b = f.read(1)
    f.seek(5000)
    f.write(bytes([b[0] ^ 1]))
dl2 = os.path.join(d, "dl2")
p = tf(["model", "download", "tf-dnn-mnist:2", "--to", dl2, "--registry", reg])
T.check(C.one_error_line(p) and "tf-dnn-mnist:2" in p.stderr and "modified or corrupted" in p.stderr,
        f"sha256 mismatch: {p.stderr}")
T.check(not os.path.exists(os.path.join(dl2, "model.h5")), "a failed download left model.h5")

# A broken entry is reported by list, not fatal.
os.makedirs(os.path.join(reg, "other", "1"))
open(os.path.join(reg, "other", "1", "metadata.json"), "w").write("{broken")
p = tf(["model", "list", "--registry", reg])
T.check(p.returncode == 0 and "other:1" in p.stdout and "broken entry" in p.stdout, "broken entry in list")

# Hand-damaged metadata that still parses: no id (download crashed), an id
# that is not a string, a JSON array. Each is one error line naming the file,
# never a crash, and list marks each as broken.
model_bytes = open(model_file, "rb").read()
for v, damage in ((1, lambda m: m.pop("id")), (2, lambda m: m.update(id=5)),
                  (3, lambda m: m.update(id="other:3")), (4, None)):
    edir = os.path.join(reg, "damaged", str(v))
    os.makedirs(edir)
    open(os.path.join(edir, "model.h5"), "wb").write(model_bytes)
    m = dict(meta, id=f"damaged:{v}", version=v, name="damaged")
    if damage:
        damage(m)
        open(os.path.join(edir, "metadata.json"), "w").write(json.dumps(m))
    else:
        open(os.path.join(edir, "metadata.json"), "w").write(json.dumps([m]))
    meta_path = os.path.join(edir, "metadata.json")
    for args in (["download", f"damaged:{v}", "--to", os.path.join(d, f"dmg{v}")],
                 ["show", f"damaged:{v}"]):
        p = tf(["model"] + args + ["--registry", reg])
        T.check(C.one_error_line(p) and meta_path in p.stderr and "not this entry" in p.stderr,
                f"damaged metadata {v}, {args[0]}: rc {p.returncode} {p.stderr.strip()!r}")
    T.check(not os.path.exists(os.path.join(d, f"dmg{v}", "model.h5")),
            f"damaged metadata {v}: download copied the model")
p = tf(["model", "list", "--registry", reg])
T.check(p.returncode == 0 and all(f"damaged:{v}" in p.stdout for v in range(1, 5)) and
        p.stdout.count("broken entry") == 5, f"damaged entries in list: {p.stdout}")

bad = [
    (["register", "--name", "bad/name", "--path", model_dir], "--name 'bad/name'"),
    (["register", "--name", "x"], "--path: required"),
    (["register", "--path", model_dir], "--name: required"),
    (["register", "--name", "x", "--path", data], "model.h5: No such file"),
    (["register", "--name", "x", "--path", model_dir, "--tag", "novalue"], "--tag 'novalue'"),
    (["register", "--name", "x", "--path", model_dir, "--tag", "a=1", "--tag", "a=2"], "given twice"),
    (["register", "--name", "x", "--path", model_dir, "--cpu", "-1"], "--cpu: '-1'"),
    (["register", "--name", "x", "--path", model_dir, "--memory-gb", "lots"], "--memory-gb: 'lots'"),
    (["register", "--name", "x", "--path", model_dir, "--bogus", "1"], "unknown flag '--bogus'"),
    (["show", "nothing"], "no model named 'nothing'"),
    (["show", "tf-dnn-mnist:0"], "version '0' is not a positive integer"),
    (["show", "tf-dnn-mnist:99"], "no such version (newest is tf-dnn-mnist:10)"),
    (["show"], "NAME[:VERSION] required"),
    (["download", "tf-dnn-mnist:1"], "--to: required"),
    (["download", "tf-dnn-mnist:1", "--to", ""], "--to: empty"),
    (["register", "--name", "x", "--path", ""], "--path: empty"),
    (["list", "--json=maybe"], "--json: 'maybe' is not on/off"),
    (["frobnicate"], "unknown subcommand 'frobnicate'"),
]
p = tf(["model"])
T.check(p.returncode == 2 and not p.stdout and "usage: tfdist model" in p.stderr, "bare 'model': usage on stderr")
for args, needle in bad:
    p = tf(["model"] + args + ["--registry", reg])
    T.check(C.one_error_line(p) and needle in p.stderr, f"{args}: wanted '{needle}', got {p.stderr.strip()}")
T.check(not os.path.exists(os.path.join(reg, "x")), "a failed register left an entry")
C.finish(d)
