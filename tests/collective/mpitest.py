"""Helpers for the collective tests: run `tfdist train` under a real mpirun
(wrapped in `timeout -k`, as mpirun can outlive a killed process group) and
read what it wrote. Test-only."""
import os
import subprocess
import time

from tfdtest import max_abs_diff, tensors, wait_for  # noqa: F401 (the collective tests' names)

import idxgen
import numpy as np

TFDIST = os.environ["TFDIST"]
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
LAYERS = ("dense", "dense_1", "dense_2")


def train_cmd(np_, folder, data, extra=(), mpirun_extra=()):
    return (["timeout", "-k", "5", "110"] + MPIRUN + list(mpirun_extra) + ["-np", str(np_), TFDIST,
            "train", "--data-folder", data, "--outputs", os.path.join(folder, "outputs"),
            "--logs", os.path.join(folder, "logs"), "--progress", "off",
            "--checkpoint-every", "0"] + list(extra))


def run_train(np_, folder, data, extra=(), mpirun_extra=()):
    """Runs to completion; returns (returncode, combined output)."""
    p = subprocess.run(train_cmd(np_, folder, data, extra, mpirun_extra), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=130)
    return p.returncode, p.stdout


def weights(folder):
    """The model's tensors under folder/outputs, keyed like Keras names them."""
    return tensors(os.path.join(folder, "outputs", "model", "model.h5"))


def rank_pids(marker, rank):
    """Pids of processes carrying env TFDIST_TEST_MARK=marker and the given MPI rank."""
    want = [b"TFDIST_TEST_MARK=" + marker.encode(), b"OMPI_COMM_WORLD_RANK=%d" % rank]
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/comm" % d, "rb") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm == b"tfdist" and all(w in env for w in want):
            pids.append(int(d))
    return pids


def finish(p, log, t0, limit_s):
    """Waits for a started job (killed after limit_s + 60 s): its exit code,
    seconds since t0, and its output."""
    try:
        rc = p.wait(timeout=limit_s + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    elapsed = time.monotonic() - t0
    log.seek(0)
    return rc, elapsed, log.read()


def epoch_logged(folder, rank):
    """Whether rank's log under folder/logs has finished an epoch's first line."""
    try:
        with open(os.path.join(folder, "logs", "rank-%d.log" % rank)) as f:
            return "epoch   1/" in f.read()
    except OSError:
        return False


def verdict(name, ok, why, out=""):
    """Prints one case's result (and the tail of out on failure); 0 or 1."""
    print("%s: %s%s" % (name, "ok" if ok else "FAIL: ", "" if ok else why))
    if not ok and out:
        print(out[-4000:])
    return 0 if ok else 1


def shm_entries():
    """Our segments in /dev/shm (shm's and hier's: tfdist-shm.<pid>.<tag>)."""
    return {e for e in os.listdir("/dev/shm") if e.startswith("tfdist-shm.")}


def write_data(tmp):
    """The shm and hier training tests' idx set under tmp/data: its folder."""
    data = os.path.join(tmp, "data")
    idxgen.write_set(data, np.random.default_rng(11), n_train=3200, n_test=200)
    return data
