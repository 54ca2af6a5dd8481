"""Helpers for the checkpoint tests: learnable synthetic data whose test split
shares the train split's class prototypes, and short training runs. Test-only."""
import os

import numpy as np

import idxgen
import tfdtest as T


def make_data(folder, seed=3, n_train=600, n_test=200):
    """The four idx files (gz) under folder; train and test share prototypes."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(10, 784))
    # noise 200: hard enough that accuracy < 1
    return idxgen.write_shared_set(folder, rng, protos, 200, n_train, n_test)


def train_args(d, data, out, extra=()):
    """The arguments of train(), after the tfdist binary."""
    return ["train", "--data-folder", data, "--outputs", out, "--logs", os.path.join(d, "logs"),
            "--batch-size", "25", "--first-layer-neurons", "64", "--second-layer-neurons", "32",
            "--progress", "off", "--seed", "5"] + list(extra)


def train(d, data, out, extra=(), mpi=0, env=None, timeout=300):
    """tfdist train on small data with small layers; returns CompletedProcess."""
    return T.run(train_args(d, data, out, extra), mpi=mpi, env=env, timeout=timeout)


def one_error_line(p):
    """The process failed with exactly one 'tfdist: error:' line and no crash."""
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    return (p.returncode not in (0, None) and p.returncode > 0 and len(lines) == 1
            and lines[0].startswith("tfdist: error:"))


def same_weights(a, b):
    wa, wb = T.weights(a), T.weights(b)
    return len(wa) == len(wb) == 6 and all(x.shape == y.shape and np.array_equal(x, y)
                                           for x, y in zip(wa, wb))


def finish(d):
    """Removes the test folder when every check passed, then exits with the verdict."""
    import shutil
    if not T.failures:
        shutil.rmtree(d, ignore_errors=True)
    T.done()
