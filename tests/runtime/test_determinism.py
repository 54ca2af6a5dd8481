"""The same seed gives bit-identical weights and metrics in two runs; a
different seed gives different weights."""
import os

import numpy as np

import idxgen
import tfdtest as T

d = T.tmpdir()
idxgen.write_set(os.path.join(d, "data"), np.random.default_rng(11), 1200, 300, gz=True)
results = []
for k, seed in enumerate((5, 5, 6)):
    out = os.path.join(d, f"out{k}")
    p = T.run(["train", "--data-folder", os.path.join(d, "data"), "--epochs", "2", "--seed",
               str(seed), "--batch-size", "32", "--outputs", out, "--logs", os.path.join(d, "logs")])
    T.check(p.returncode == 0, f"run {k} failed: {p.stderr.strip()}")
    w = T.weights(os.path.join(out, "model", "model.h5"))
    m = [(r["name"], r["value"], r["epoch"], r["step"]) for r in T.metrics(out)
         if r["name"] not in ("samples_per_s", "step_time_ms", "epoch_time_s", "data_wait_s")]
    results.append((w, m))
(w0, m0), (w1, m1), (w2, _) = results
T.check(all(np.array_equal(a, b) for a, b in zip(w0, w1)), "same seed: weights differ")
T.check(m0 == m1, "same seed: metrics differ")
T.check(len(m0) >= 10, f"too few metrics rows: {len(m0)}")
T.check(not np.array_equal(w0[0], w2[0]), "different seed gave identical weights")
# Glorot-uniform after 2 short epochs is still near its init: not degenerate.
T.check(float(np.std(w0[0])) > 0.01, "first kernel is degenerate")
T.done()
