"""Helpers for the collective tests: run `tfdist train` under a real mpirun
(wrapped in `timeout -k`, as mpirun can outlive a killed process group) and
read what it wrote. Test-only."""
import os
import subprocess
import time

import h5py
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
    """The model's tensors, keyed like Keras names them."""
    out = {}
    with h5py.File(os.path.join(folder, "outputs", "model", "model.h5"), "r") as f:
        g = f["model_weights"]
        for layer in LAYERS:
            for kind in ("kernel:0", "bias:0"):
                out[layer + "/" + kind] = np.array(g[layer][layer][kind])
    return out


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


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


def wait_for(pred, limit_s, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s" % (limit_s, what))
