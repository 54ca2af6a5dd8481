"""Helpers for the CLI tests: run the built tfdist, make synthetic data,
read model.h5 and metrics.jsonl. Test-only."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

TFDIST = os.environ.get("TFDIST", "build/cli/tfdist")
failures = []


def check(cond, msg):
    """Records a failed check; returns cond, so a caller can stop early."""
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, file=sys.stderr)
    return bool(cond)


def done():
    if failures:
        print(f"FAILED: {len(failures)} check(s)", file=sys.stderr)
        sys.exit(1)
    print("ok")
    sys.exit(0)


def run(args, cwd=None, timeout=600, env=None, mpi=0):
    """Runs tfdist (under mpirun -np mpi when mpi > 0); returns CompletedProcess."""
    cmd = [TFDIST] + list(args)
    if mpi:
        cmd = ["mpirun", "-np", str(mpi), "--oversubscribe", "--bind-to", "none"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


_tmpdirs = []
_status = {"code": 0}
_sys_exit = sys.exit
_sys_excepthook = sys.excepthook


def _exit(code=0):
    _status["code"] = code
    _sys_exit(code)


def _excepthook(*args):
    _status["code"] = 1
    _sys_excepthook(*args)


sys.exit = _exit
sys.excepthook = _excepthook


@atexit.register
def _tmpdirs_cleanup():
    """A passing (or skipped) test leaves nothing in /tmp; a failing one, or
    TFDIST_KEEP_TMP=1, keeps its folders for a look and names them."""
    if _status["code"] in (0, None, 77) and not os.environ.get("TFDIST_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    else:
        for d in _tmpdirs:
            print("kept for a look: %s" % d, file=sys.stderr)


def tmpdir():
    d = tempfile.mkdtemp(prefix="tfdist-test-")
    _tmpdirs.append(d)
    return d


def metrics(outputs):
    rows = []
    with open(os.path.join(outputs, "metrics.jsonl")) as f:
        for line in f:
            rows.append(json.loads(line))
    return rows


def metric(outputs, name):
    return [r["value"] for r in metrics(outputs) if r["name"] == name]


def tensors(path):
    """The tensors of a model file or checkpoint, via h5py, in layer order,
    keyed as Keras names them ("dense/kernel:0", ...)."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        for layer in g.attrs["layer_names"]:
            layer = layer.decode()
            for name in g[layer].attrs["weight_names"]:
                out[name.decode()] = np.array(g[layer][name.decode()])
    return out


def weights(path):
    """The model's tensors from model.h5, in layer order (a list)."""
    return list(tensors(path).values())


def _pairs(a, b):
    """The tensors of a and b side by side (two dicts with the same names, or
    two lists of one length), or None when they do not pair up."""
    if isinstance(a, dict) != isinstance(b, dict):
        return None
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return None
        a, b = [a[k] for k in a], [b[k] for k in a]
    if len(a) != len(b) or not a or any(x.shape != y.shape for x, y in zip(a, b)):
        return None
    return list(zip(a, b))


def max_abs_diff(a, b):
    """The largest |a - b| over every tensor, in float64; inf when the names,
    count or shapes differ."""
    pairs = _pairs(a, b)
    if pairs is None:
        return float("inf")
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in pairs)


def bits_equal(a, b):
    """Whether every float32 tensor of a equals b's bit for bit."""
    pairs = _pairs(a, b)
    return pairs is not None and all(np.array_equal(np.asarray(x, np.float32).view(np.uint32),
                                                    np.asarray(y, np.float32).view(np.uint32))
                                     for x, y in pairs)


def wait_for(pred, limit_s, what):
    """Polls pred until it holds; AssertionError after limit_s seconds."""
    import time
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s" % (limit_s, what))


def small_model(d, seed):
    """A 784-16-8-10 model trained one epoch on 300 synthetic samples under d
    (the serving tests' model); returns its folder. Ends the test if it fails."""
    import idxgen
    idxgen.write_set(os.path.join(d, "data"), np.random.default_rng(seed), 300, 50, gz=True)
    out = os.path.join(d, "out")
    p = run(["train", "--data-folder", os.path.join(d, "data"), "--epochs", "1", "--outputs", out,
             "--logs", os.path.join(d, "logs"), "--first-layer-neurons", "16",
             "--second-layer-neurons", "8", "--progress", "off"], timeout=120)
    check(p.returncode == 0, f"train failed: {p.stderr.strip()}")
    if failures:
        done()
    return os.path.join(out, "model")
