"""The exit-code rule of README.md ("Exit codes"), one case per row of its
table: 2 for bad flags, configs or input, found before or after MPI start-up
(every rank exits with rank 0's code); 1 for a run-time failure; 128 + N for
signal N; tfdistrun --max-restarts does not retry a 2."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import idxgen
import tfdtest as T

d = T.tmpdir()
good = os.path.join(d, "good")
idxgen.write_set(good, np.random.default_rng(5), 300, 100, gz=False, nested="")
# the README's bad-labels folder: label 10 in sample 12 (byte 8 + 12 of the labels file)
bad = os.path.join(d, "bad")
shutil.copytree(good, bad)
with open(os.path.join(bad, "train-labels-idx1-ubyte"), "r+b") as f:
    f.seek(20)
    f.write(b"\x0a")


def base(tag, epochs=1):
    return ["--epochs", str(epochs), "--batch-size", "25", "--progress", "off",
            "--outputs", os.path.join(d, tag, "outputs"), "--logs", os.path.join(d, tag, "logs")]


def row(label, p, want, needle=None):
    err = p.stderr.strip()
    ok = T.check(p.returncode == want, f"{label}: exit {p.returncode}, want {want}: {err[-400:]}")
    if needle is not None:
        ok = T.check(needle in err, f"{label}: {needle!r} not in stderr {err[-400:]!r}") and ok
    if ok:
        print(f"ok  {want:3d}  {label}")


# 0: success
row("success", T.run(["train", "--data-folder", good] + base("ok", 2)), 0)
# 2: a bad flag, before MPI start-up, 1 rank and 2 ranks
row("bad flag", T.run(["train", "--batch-size", "0"] + base("flag")), 2, "--batch-size")
row("bad flag, mpirun -np 2", T.run(["train", "--batch-size", "0"] + base("flag2"), mpi=2), 2,
    "--batch-size")
# 2: a bad config file
cfg = os.path.join(d, "bad.json")
open(cfg, "w").write('{"batch_size": "fifty"}')
row("bad config", T.run(["train", "--config", cfg, "--data-folder", good] + base("cfg")[:2]), 2,
    "batch_size")
# 2: bad data, found after start-up, 1 rank and 2 ranks (every rank exits 2)
row("bad data", T.run(["train", "--data-folder", bad] + base("data")), 2, "label 10 out of range")
row("bad data, mpirun -np 2", T.run(["train", "--data-folder", bad] + base("data2"), mpi=2), 2,
    "label 10 out of range")
row("data verify on bad data", T.run(["data", "verify", bad]), 2, "label 10 out of range")
notes = os.path.join(d, "notes.txt")
open(notes, "w").write("not a model\n")
row("model export of a file that is not a model",
    T.run(["model", "export", "--format", "onnx", "--model", notes, "--out",
           os.path.join(d, "m.onnx")]), 2, "not an HDF5 file")
# 2: a flag that disagrees with the checkpoint (found after start-up)
ck = base("ok", 3)
row("flag differs from the checkpoint",
    T.run(["train", "--data-folder", good, "--resume-from", "latest", "--learning-rate", "0.5"]
          + ck), 2, "but the checkpoint has")
# 1: a run-time failure (the test switch fails rank 0 at step 3), 1 rank and 2 ranks
fault = {"TFDIST_FAULT_FAIL_RANK": "0", "TFDIST_FAULT_FAIL_STEP": "3"}
row("run-time failure", T.run(["train", "--data-folder", good] + base("fail"), env=fault), 1,
    "test fault")
row("run-time failure, mpirun -np 2",
    T.run(["train", "--data-folder", good] + base("fail2"), env=fault, mpi=2), 1, "test fault")
# 128 + N: SIGTERM during training
outs = os.path.join(d, "sig", "outputs")
p = subprocess.Popen([T.TFDIST, "train", "--data-folder", good] + base("sig", 500),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
t0 = time.time()
while time.time() - t0 < 60 and not os.path.exists(os.path.join(outs, "metrics.jsonl")):
    time.sleep(0.05)
time.sleep(0.3)
p.send_signal(signal.SIGTERM)
so, se = p.communicate(timeout=60)
row("SIGTERM", subprocess.CompletedProcess(p.args, p.returncode, so, se), 128 + signal.SIGTERM,
    "canceled by SIGTERM")
# tfdistrun --max-restarts: a 2 is not retried, a 1 is
tfdistrun = os.path.join(os.environ.get("TFDIST_SOURCE_ROOT", "."), "launcher", "tfdistrun")
run_env = dict(os.environ, **fault)
p = subprocess.run([tfdistrun, "-np", "2", "--max-restarts", "2", "--tfdist", T.TFDIST, "train",
                    "--data-folder", bad, "--resume-from", "auto"] + base("rs2"), capture_output=True, text=True,
                   timeout=300)
row("tfdistrun --max-restarts 2, bad data: not retried", p, 2, "label 10 out of range")
T.check("restart 1" not in p.stderr, f"bad data was restarted: {p.stderr[-600:]}")
p = subprocess.run([tfdistrun, "-np", "2", "--max-restarts", "1", "--tfdist", T.TFDIST,
                    "-x", "TFDIST_FAULT_FAIL_RANK", "-x", "TFDIST_FAULT_FAIL_STEP", "train",
                    "--data-folder", good, "--resume-from", "auto"] + base("rs1"), capture_output=True, text=True,
                   timeout=300, env=run_env)
row("tfdistrun --max-restarts 1, run-time failure: retried once", p, 1)
T.check("restart 1 of 1" in p.stderr, f"a run-time failure was not restarted: {p.stderr[-600:]}")
sys.stdout.flush()
T.done()
