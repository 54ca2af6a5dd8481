"""Data-parallel equivalence under real mpirun: with the same seed and global
batch, N=1 batch 4B, N=2 batch 2B and N=4 batch B give the same weights after
one epoch (max |dw| <= 1e-5, read from model.h5 with h5py), with the ring and
with the mpi back end (blocking at N=4, per-layer overlap at N=2); repeated ring runs
with the same N are bit-identical; every rank logs the same checksum of the
broadcast initial weights, equal to the single-rank run's."""
import os
import re
import sys
import tempfile

import numpy as np

import idxgen
import mpitest

B = 10
TOL = 1e-5


def params_checksums(folder, np_):
    sums = []
    for r in range(np_):
        with open(os.path.join(folder, "logs", "rank-%d.log" % r)) as f:
            m = re.findall(r"initial params: \d+ floats, fnv1a ([0-9a-f]{16})", f.read())
        assert len(m) == 1, "rank %d: no checksum line" % r
        sums.append(m[0])
    return sums


def main():
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        idxgen.write_set(data, np.random.default_rng(11), n_train=2400, n_test=200)
        common = ["--epochs", "1", "--seed", "7", "--learning-rate", "0.05"]
        runs = [("n1", 1, "ring", "on"), ("n2", 2, "ring", "on"), ("n4", 4, "ring", "on"),
                ("n4b", 4, "ring", "on"), ("n2b", 2, "ring", "on"), ("n4mpi", 4, "mpi", "off"),
                # the mpi back end's per-layer overlap: iallreduce, the waiter asleep on done_cv
                ("n2mpi", 2, "mpi", "on")]
        w, sums = {}, {}
        for name, np_, backend, overlap in runs:
            folder = os.path.join(tmp, name)
            rc, out = mpitest.run_train(np_, folder, data, common + [
                "--batch-size", str(4 * B // np_), "--allreduce", backend, "--overlap", overlap])
            if rc != 0:
                print("%s: exit %d\n%s" % (name, rc, out))
                return 1
            w[name] = mpitest.weights(folder)
            sums[name] = params_checksums(folder, np_)
        ref = w["n1"]
        for name in ("n2", "n4", "n4mpi", "n2mpi"):
            d = mpitest.max_abs_diff(ref, w[name])
            print("%s vs n1: max |dw| = %.3g" % (name, d))
            if not d <= TOL:
                print("FAIL: %s differs from n1 by %.3g > %g" % (name, d, TOL))
                failures += 1
        # Biases start at zero: non-zero ones show training happened.
        if not np.any(ref["dense_2/bias:0"]):
            print("FAIL: the biases are still zero: nothing was trained")
            failures += 1
        for a, b in (("n4", "n4b"), ("n2", "n2b")):
            same = all(np.array_equal(w[a][k].view(np.uint32), w[b][k].view(np.uint32)) for k in w[a])
            print("%s vs %s (ring, repeated): %s" % (a, b, "bit-identical" if same else "DIFFERENT"))
            if not same:
                failures += 1
        for name, s in sums.items():
            if len(set(s)) != 1 or s[0] != sums["n1"][0]:
                print("FAIL: %s: initial-weight checksums per rank %s, single rank %s"
                      % (name, s, sums["n1"][0]))
                failures += 1
        print("broadcast: every rank's initial weights hash to %s" % sums["n1"][0])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
