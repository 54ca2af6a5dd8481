"""Config files and flags: flags override the file, the shipped tutorial
config resolves to the SPEC defaults, --help documents every flag."""
import json
import os

import numpy as np

import idxgen
import tfdtest as T

src = os.environ.get("TFDIST_SOURCE_ROOT", ".")
d = T.tmpdir()
idxgen.write_set(os.path.join(d, "data"), np.random.default_rng(4), 400, 100)
cfg = os.path.join(d, "c.json")
json.dump({"batch_size": 20, "epochs": 1, "learning_rate": 0.05, "seed": 9}, open(cfg, "w"))
out = os.path.join(d, "out")
p = T.run(["train", "--config", cfg, "--batch-size", "40", "--data-folder", os.path.join(d, "data"),
           "--outputs", out, "--logs", os.path.join(d, "logs")])
T.check(p.returncode == 0, f"train failed: {p.stderr}")
run = json.load(open(os.path.join(out, "run.json")))
c = run["config"]
T.check(c["batch_size"] == 40, "flag did not override the config file")
T.check(c["learning_rate"] == 0.05 and c["seed"] == 9 and c["epochs"] == 1, f"config not applied: {c}")
steps = [r["step"] for r in T.metrics(out) if r["name"] == "validation_acc"]
T.check(steps == [10], f"400 samples / batch 40 should be 10 steps, got {steps}")

# --config given twice: the last one wins, like every other flag, and run.json
# records the file whose values were used.
cfg2 = os.path.join(d, "c2.json")
json.dump({"batch_size": 20, "epochs": 1, "seed": 11}, open(cfg2, "w"))
p = T.run(["train", "--config", cfg, "--data-folder", os.path.join(d, "data"), "--config=" + cfg2,
           "--outputs", out, "--logs", os.path.join(d, "logs"), "--progress", "off"])
T.check(p.returncode == 0, f"train with two --config failed: {p.stderr}")
c = json.load(open(os.path.join(out, "run.json")))["config"]
T.check(c["seed"] == 11 and c["config"] == cfg2 and c["learning_rate"] == 0.01,
        f"two --config: the last should win: seed {c['seed']}, config {c['config']}, "
        f"learning_rate {c['learning_rate']}")

# The resolved config in run.json runs again as a --config file, its "config"
# key included; boolean flags take 1/0 as a separate word as well as after "=".
rerun = os.path.join(d, "rerun.json")
json.dump(c, open(rerun, "w"))
out2 = os.path.join(d, "out2")
p = T.run(["train", "--config", rerun, "--outputs", out2, "--logs", os.path.join(d, "logs"),
           "--overlap", "0", "--scale-lr", "1"])
T.check(p.returncode == 0, f"run.json's config as --config failed: {p.stderr.strip()}")
c2 = json.load(open(os.path.join(out2, "run.json")))["config"] if p.returncode == 0 else {}
T.check(all(c2.get(k) == v for k, v in c.items() if k not in ("config", "outputs", "overlap",
                                                                 "scale_lr")),
        f"rerun config differs: {c} vs {c2}")
T.check(c2.get("overlap") is False and c2.get("scale_lr") is True, f"--overlap 0 --scale-lr 1: {c2}")

tut = json.load(open(os.path.join(src, "configs", "tutorial.json")))
T.check(tut == {"batch_size": 50, "first_layer_neurons": 300, "second_layer_neurons": 100,
                "learning_rate": 0.01, "epochs": 20}, f"configs/tutorial.json: {tut}")

h = T.run(["train", "--help"])
T.check(h.returncode == 0, "--help failed")
for flag, default in (("--data-folder", None), ("--batch-size", "50"), ("--first-layer-neurons", "300"),
                      ("--second-layer-neurons", "100"), ("--learning-rate", "0.01"),
                      ("--epochs", "20"), ("--seed", None), ("--outputs", "./outputs"),
                      ("--logs", "./logs"), ("--config", None), ("--resume-from", None),
                      ("--allreduce", None), ("--device", "auto")):
    line = [l for l in h.stdout.splitlines() if l.strip().startswith(flag + " ")]
    T.check(len(line) == 1, f"--help lacks {flag}")
    if line and default:
        T.check(f"(default: {default})" in line[0], f"--help: {flag} default not {default}: {line[0]}")
v = T.run(["--version"])
T.check(v.returncode == 0 and v.stdout.startswith("tfdist "), "--version")
cb = T.run(["--check-build"])
for lib in ("BLAS", "MPI", "HDF5", "CUDA"):
    T.check(lib in cb.stdout, f"--check-build lacks {lib}")
# every allreduce back end a CPU build carries, hier included, and compression
for b in ("mpi", "ring", "tcp", "shm", "hier"):
    T.check(f"[X] allreduce {b:<5} " in cb.stdout, f"--check-build lacks allreduce {b}")
T.check("[X] compression     --compression none|bf16|fp16" in cb.stdout,
        "--check-build lacks --compression")
T.done()
