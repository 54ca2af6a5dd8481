"""Helpers for the launcher tests: learnable idx data, run outputs, skips,
and teardown that runs on failure and on SIGTERM (meson's timeout)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np

import idxgen

SKIP = 77
SRC = os.environ.get("TFDIST_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
TFDIST = os.environ.get("TFDIST", os.path.join(SRC, "build", "cli", "tfdist"))
LAUNCHER = os.path.join(SRC, "launcher")
SIMHOSTS = os.path.join(LAUNCHER, "netns", "simhosts")
NSRSH = os.path.join(LAUNCHER, "netns", "nsrsh")
SIMCLUSTER = os.path.join(LAUNCHER, "slurm", "simcluster")
TFDISTRUN = os.path.join(LAUNCHER, "tfdistrun")


def write_learnable_set(folder, seed, n_train, n_test):
    """Train and test drawn from the same class prototypes, so validation
    accuracy measures learning (idxgen.write_set draws new ones per split)."""
    rng = np.random.default_rng(seed)
    # Mid-grey prototypes under heavy noise: one epoch learns some of it
    # (~0.6 at 1200 samples), so accuracies are neither chance nor 1.0.
    protos = 128 + rng.integers(-80, 80, size=(10, 784))
    idxgen.write_shared_set(folder, rng, protos, 120, n_train, n_test)


def final_acc(outputs):
    """final_acc from outputs/metrics.jsonl; exactly one such line."""
    vals = []
    with open(os.path.join(outputs, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["name"] == "final_acc":
                vals.append(row["value"])
    if len(vals) != 1:
        raise AssertionError("%s: %d final_acc lines, expected 1" % (outputs, len(vals)))
    return vals[0]


def run_ranks(outputs):
    with open(os.path.join(outputs, "run.json"), encoding="utf-8") as f:
        return json.load(f)["ranks"]


def check_rank_logs(logs, size, epochs):
    """Every rank wrote logs/rank-<r>.log with each epoch's line; no extra logs."""
    names = sorted(os.listdir(logs))
    want = sorted("rank-%d.log" % r for r in range(size))
    if names != want:
        raise AssertionError("%s holds %s, expected %s" % (logs, names, want))
    for r in range(size):
        with open(os.path.join(logs, "rank-%d.log" % r), encoding="utf-8") as f:
            text = f.read()
        for e in range(1, epochs + 1):
            if "epoch %3d/%d" % (e, epochs) not in text:
                raise AssertionError("rank-%d.log lacks the epoch %d line:\n%s" % (r, e, text))


def need_root_netns(probe_name):
    """Exits 77 unless we are root and may create network namespaces."""
    if os.geteuid() != 0:
        print("SKIP: needs root for network namespaces")
        sys.exit(SKIP)
    for tool in ("ip", "nsenter", "unshare", "tc", "mpirun"):
        if not shutil.which(tool):
            print("SKIP: %s not installed (launcher/setup-debian.sh)" % tool)
            sys.exit(SKIP)
    r = subprocess.run(["ip", "netns", "add", probe_name], capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIP: cannot create a network namespace: %s" % r.stderr.strip())
        sys.exit(SKIP)
    subprocess.run(["ip", "netns", "del", probe_name], check=False)


def prefix_for(tag):
    """Namespace prefix unique to this process: tests may run in parallel."""
    return ("%s%x" % (tag, os.getpid()))[:10]


def on_signals_exit():
    """SIGTERM/SIGINT raise SystemExit so `finally` teardown still runs."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(cmd, timeout, **kw):
    """Runs cmd under `timeout -k` (mpirun can outlive a killed group); prints
    its output; raises on a non-zero exit. Simulated hosts share the cores,
    so ranks waiting in MPI yield instead of spinning."""
    full = ["timeout", "-k", "5", str(timeout)] + cmd
    if "env" not in kw:
        kw["env"] = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                         OMPI_MCA_mpi_yield_when_idle="1")
    r = subprocess.run(full, capture_output=True, text=True, **kw)
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    if r.returncode != 0:
        raise AssertionError("exit %d: %s" % (r.returncode, " ".join(cmd)))
    return r.stdout
