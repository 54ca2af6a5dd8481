"""What both tfdist serve tests stand on: two different trained models
registered as mnist versions 1 and 2, the float64 numpy oracle from their h5py
weights, and the checks of an answer against it (test_serve.py: the main
server's contract; test_serve_options.py: serve's flags and model sources)."""
import contextlib
import os

import numpy as np

import idxgen
import tfdtest as T
import serveclient
from serveclient import is_json, loads
d = T.tmpdir()
reg = os.path.join(d, "registry")
rng = np.random.default_rng(20240611)


def Server(args, tag, env=None):
    return serveclient.Server(T.TFDIST, args, d, tag, env)


def section(name, fn):
    """Runs one group of checks; an exception is one failure, not the end."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report and go on
        T.check(False, f"{name}: {type(e).__name__}: {e}")

@contextlib.contextmanager
def raw_case(srv, what):
    """A raw connection for one case: a socket error fails the case, not the test."""
    r = srv.raw()
    try:
        yield r
    except (OSError, EOFError, ValueError) as e:
        T.check(False, f"{what}: {type(e).__name__}: {e}")
    finally:
        r.close()



# ---- two different models, registered as mnist versions 1 and 2 ----------
idxgen.write_set(os.path.join(d, "data"), np.random.default_rng(5), 600, 100, gz=True)
archs = {1: (7, []), 2: (8, ["--first-layer-neurons", "64", "--second-layer-neurons", "32"])}
outs = {}
for v, (seed, extra) in archs.items():
    o = os.path.join(d, f"out{v}")
    p = T.run(["train", "--data-folder", os.path.join(d, "data"), "--epochs", "1", "--seed", str(seed),
               "--outputs", o, "--logs", os.path.join(d, "logs")] + extra, timeout=120)
    T.check(p.returncode == 0, f"train v{v} failed: {p.stderr.strip()}")
    p = T.run(["model", "register", "--registry", reg, "--name", "mnist", "--path",
               os.path.join(o, "model")])
    T.check(p.returncode == 0 and p.stdout.strip() == f"mnist:{v}",
            f"register v{v}: rc {p.returncode} {p.stdout!r} {p.stderr!r}")
    outs[v] = o
if T.failures:
    T.done()

# ---- the oracle: float64 forward pass from the registered files ------------
W = {v: [w.astype(np.float64) for w in T.weights(os.path.join(reg, "mnist", str(v), "model.h5"))]
     for v in (1, 2)}
for v in (1, 2):
    same = T.weights(os.path.join(outs[v], "model", "model.h5"))
    T.check(all(np.array_equal(a, b) for a, b in zip(same, W[v])), f"registry copy of v{v} differs")
T.check(W[1][0].shape == (784, 300) and W[2][0].shape == (784, 64), "unexpected layer shapes")


def logits(v, x):
    h = np.asarray(x, np.float64)
    w = W[v]
    for i in range(0, len(w) - 2, 2):
        h = np.maximum(h @ w[i] + w[i + 1], 0.0)
    return h @ w[-2] + w[-1]


def probs(v, x):
    z = logits(v, x)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def rows(n, lo=0.0, hi=1.0):
    """Random float32-exact rows, never zero."""
    x = rng.uniform(lo, hi, size=(n, 784)).astype(np.float32)
    x[x == 0] = np.float32(0.5)
    return x.astype(np.float64)


def close(got, v, x, what, rtol=1e-4):
    want = probs(v, x)
    try:
        g = np.array(got, dtype=np.float64)
    except (TypeError, ValueError) as e:
        T.check(False, f"{what}: predictions not numbers: {e}")
        return False
    ok = g.shape == want.shape and np.allclose(g, want, rtol=rtol, atol=1e-6)
    if not ok:
        detail = f"shape {g.shape}" if g.shape != want.shape else f"max diff {np.max(np.abs(g - want)):.3g}"
        T.check(False, f"{what}: probabilities differ from v{v} oracle ({detail})")
    return ok


def clear_rows(v, x):
    """Indices of rows whose top-2 logit margin is at least 1e-4."""
    z = np.sort(logits(v, x), axis=1)
    return [i for i in range(len(x)) if z[i, -1] - z[i, -2] >= 1e-4]


def classes_ok(got, v, x, what):
    want = np.argmax(logits(v, x), axis=1)
    if not (isinstance(got, list) and len(got) == len(x) and all(type(c) is int for c in got)):
        T.check(False, f"{what}: not a list of {len(x)} ints: {str(got)[:200]}")
        return False
    bad = [i for i in clear_rows(v, x) if got[i] != want[i]]
    T.check(not bad, f"{what}: classes differ from v{v} argmax at rows {bad[:10]}")
    return not bad



def error_ok(code, hdrs, body, want_code, what, *needles):
    """A contract error: the status, JSON {"error": one line}, naming needles."""
    T.check(code == want_code, f"{what}: status {code}, expected {want_code}; body {body[:200]!r}")
    if code != want_code:
        return
    try:
        msg = loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        T.check(False, f"{what}: body is not {{\"error\": ...}}: {body[:200]!r}")
        return
    T.check(is_json(hdrs), f"{what}: content-type {hdrs.get('content-type')!r}")
    T.check(isinstance(msg, str) and msg and "\n" not in msg, f"{what}: error not one line: {msg!r}")
    for n in needles:
        alts = n if isinstance(n, tuple) else (n,)
        T.check(any(a in msg for a in alts), f"{what}: {n!r} not in error {msg!r}")


def status_ok(got, versions, what):
    want = {"model_version_status": [{"version": str(v), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}
                                     for v in versions]}
    T.check(got == want, f"{what}: {got}")


# Rows most checks send; column 7 is sent as an integer ("1") by test_serve.py.
X = rows(12)
X[:, 7] = 1.0
