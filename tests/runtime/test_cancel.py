"""SIGINT or SIGTERM during training ends the run as Canceled: run.json's
status and stage time say so, the exit code is 128 + the signal, stderr has
one line, metrics.jsonl holds only whole rows, and the previous model is left
as it was. A second signal ends the process at once. While a run trains, a
second run into the same --outputs is refused and touches nothing."""
import hashlib
import json
import os
import signal
import subprocess
import time

import numpy as np

import idxgen
import tfdtest as T

d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(5), 400, 100, gz=False, nested="")
out = os.path.join(d, "out")
base = ["train", "--data-folder", data, "--outputs", out, "--logs", os.path.join(d, "logs"),
        "--batch-size", "20", "--first-layer-neurons", "32", "--second-layer-neurons", "16",
        "--progress", "off"]
p = T.run(base + ["--epochs", "1"])
T.check(p.returncode == 0, f"first run failed: {p.stderr.strip()}")
model = os.path.join(out, "model", "model.h5")
digest = hashlib.sha256(open(model, "rb").read()).hexdigest()


def status(folder=None):
    try:
        return json.load(open(os.path.join(folder or out, "run.json")))
    except (OSError, ValueError):
        return {}


def start_long_run():
    """A run with far more epochs than the test waits for, once it is Running
    and has finished an epoch (so a metrics row is on disk)."""
    proc = subprocess.Popen([T.TFDIST] + base + ["--epochs", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        r = status()
        if r.get("status") == "Running" and os.path.exists(os.path.join(out, "metrics.jsonl")) \
                and os.path.getsize(os.path.join(out, "metrics.jsonl")) > 0:
            break
        time.sleep(0.05)
    return proc


def finish(proc, what, timeout=60):
    """The process's output once it ends; killed (and a failed check) after timeout."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        T.check(False, f"{what}: did not end within {timeout} s")
        return proc.communicate()


for sig, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
    proc = start_long_run()
    if sig == signal.SIGINT:
        # A second run into the same --outputs while this one trains.
        run_id = status().get("id")
        p = T.run(base + ["--epochs", "1", "--seed", "7"], timeout=60)
        lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
        # It shares --logs too, whose rank-0.log is locked first (issue 18): either is named.
        T.check(p.returncode == 1 and len(lines) == 1 and "in use by another tfdist run" in lines[0]
                and (out in lines[0] or "rank-0.log" in lines[0]),
                f"second run into a busy --outputs: {p.returncode} {lines}")
        T.check(status().get("id") == run_id and status().get("config", {}).get("seed") == 1,
                "the refused run rewrote run.json")
    T.check(proc.poll() is None and status().get("status") == "Running", f"{name}: run not running")
    proc.send_signal(sig)
    o, e = finish(proc, name)
    lines = [l for l in e.strip().splitlines() if l.strip()]
    T.check(proc.returncode == 128 + sig, f"{name}: exit {proc.returncode}, want {128 + sig}")
    T.check(len(lines) == 1 and "canceled" in lines[0] and name in lines[0], f"{name}: stderr {e!r}")
    r = status()
    T.check(r.get("status") == "Canceled" and "Canceled" in r.get("stage_times", {}) and
            "Completed" not in r.get("stage_times", {}), f"{name}: run.json status {r.get('status')}")
    T.check(name in r.get("error", ""), f"{name}: run.json error {r.get('error')!r}")
    rows = T.metrics(out)  # raises on a partial row
    T.check(rows and all(x["name"] != "final_acc" for x in rows), f"{name}: metrics rows")
    T.check(hashlib.sha256(open(model, "rb").read()).hexdigest() == digest,
            f"{name}: a canceled run replaced the model")

# Two signals: the second one is not waited on.
proc = start_long_run()
proc.send_signal(signal.SIGINT)
proc.send_signal(signal.SIGINT)
finish(proc, "two SIGINTs")
T.check(proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT), f"two SIGINTs: exit {proc.returncode}")


def rank_pid(launcher, rank):
    """The pid of the tfdist process that mpirun started as `rank`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


# Two ranks, SIGTERM to rank 1 alone: rank 0 hears of it, records Canceled
# naming rank 1, and ends the job. To both (a launcher's way; rank 1's relay
# then races rank 0's own signal): Canceled all the same.
# Each in a fresh --outputs: the killed run above left its run.json Running.
for k, targets in enumerate(((1,), (1, 0))):
    what = "SIGTERM to rank" + (" 1" if targets == (1,) else "s 1 and 0")
    out_k = os.path.join(d, f"out-mpi{k}")
    args = [out_k if a == out else a for a in base]
    proc = subprocess.Popen(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none",
                             T.TFDIST] + args + ["--epochs", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, pids = time.time() + 60, []
    while time.time() < deadline and proc.poll() is None:
        rows = os.path.join(out_k, "metrics.jsonl")
        if status(out_k).get("status") == "Running" and os.path.exists(rows) \
                and os.path.getsize(rows) > 0:
            pids = [rank_pid(proc.pid, r) for r in targets]
            break
        time.sleep(0.05)
    if not pids or None in pids:
        T.check(False, f"{what}: the ranks' processes not found ({pids})")
        proc.kill()
        proc.communicate()
        continue
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    o, e = finish(proc, what)
    r = status(out_k)
    T.check(r.get("status") == "Canceled" and "SIGTERM" in r.get("error", "")
            and (len(targets) > 1 or "rank 1" in r.get("error", "")),
            f"{what}: run.json {r.get('status')} {r.get('error')!r}")
    # rank 0 ends the job by MPI_Abort(128 + SIGTERM), which mpirun exits with
    T.check(proc.returncode == 128 + signal.SIGTERM, f"{what}: mpirun exit {proc.returncode}")
T.done()
