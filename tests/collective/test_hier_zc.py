"""--allreduce hier's zero copy in training: backward writes the gradients into
the node's shared segment (coll_comm_buffer; the rank log says so) and the
allreduce copies nothing, against --shared-gradients off (private gradients,
the copying path; the rank log says so too), with --overlap on and off: the
same weights bit for bit after 30 steps.
- mpirun -np 2 and 3 (one node: hier is shm's node sum), and the 2-rank runs
  against 1 rank x 100 within max |dw| <= 1e-6 (h5py);
- a TF_CONFIG cluster of 4 tasks on 2 loopback hosts (127.0.0.1, .2: two
  nodes, so the ring across nodes runs in place on the slices), fp32 and
  --compression bf16 (the ring's 16-bit transfers on the zero-copy path;
  there overlap on and off round other segments, so each is compared with
  its own copying run).
Ranks given different --shared-gradients stop at start-up, naming the flag.
Nothing of ours may be left in /dev/shm."""
import os
import subprocess
import sys
import tempfile

import numpy as np

import mpitest
import tfcluster as TC

TOL = 1e-6
STEPS = 30
SHARED = "gradients: in the comm's shared segment"
PRIVATE = "gradients: private (the allreduce copies them): --shared-gradients off"


def flags(batch, overlap, shared, extra=()):
    return ["--epochs", "1", "--max-steps", str(STEPS), "--seed", "7", "--learning-rate", "0.05",
            "--batch-size", str(batch), "--allreduce", "hier", "--overlap", overlap,
            "--shared-gradients", shared, "--threads", "1"] + list(extra)


def logs_say(folder, ranks, want):
    """The ranks whose log lacks want."""
    bad = []
    for r in range(ranks):
        try:
            with open(os.path.join(folder, "logs", "rank-%d.log" % r)) as f:
                text = f.read()
        except OSError:
            text = ""
        if want not in text:
            bad.append(r)
    return bad


def bit_identical(a, b):
    return all(np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)) for k in a)


def same_as_first(w, names):
    fails = 0
    for name in names[1:]:
        fails += mpitest.verdict("bit-identical %s %s" % (names[0], name),
                                 bit_identical(w[names[0]], w[name]), "weights differ")
    return fails


def mpi_runs(tmp, data, np_):
    """hier zero copy and copying, overlap on and off, under mpirun -np np_."""
    w, fails, names = {}, 0, []
    for overlap in ("on", "off"):
        for shared in ("on", "off"):
            name = "np%d-%s-overlap-%s" % (np_, "zc" if shared == "on" else "copy", overlap)
            folder = os.path.join(tmp, name)
            rc, out = mpitest.run_train(np_, folder, data, flags(100 // np_, overlap, shared))
            if rc != 0:
                return mpitest.verdict(name, False, "exit %d" % rc, out), w
            bad = logs_say(folder, np_, SHARED if shared == "on" else PRIVATE)
            fails += mpitest.verdict(name + " rank logs", not bad, "ranks %s do not say it" % bad)
            w[name] = mpitest.weights(folder)
            names.append(name)
    return fails + same_as_first(w, names), w


def cluster_runs(tmp, data):
    """4 tasks on 2 loopback hosts (nodes of 2): zero copy against copying."""
    ports = TC.free_ports(4)
    hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"]
    addr = ["%s:%d" % (h, p) for h, p in zip(hosts, ports)]
    spec = {"chief": addr[:1], "worker": addr[1:]}
    fails = 0
    for comp in ("none", "bf16"):
        w, names = {}, []
        for overlap, shared in (("on", "on"), ("on", "off"), ("off", "on"), ("off", "off")):
            name = "tf4-%s-%s-overlap-%s" % (comp, "zc" if shared == "on" else "copy", overlap)
            folder = os.path.join(tmp, name)
            c = TC.Cluster(folder, spec)
            try:
                c.start(TC.train_args(folder, data, flags(25, overlap, shared,
                                                          ["--compression", comp])), limit_s=150)
                ended = c.wait(170)
            finally:
                c.kill()
            bad = [t.name for t in c.tasks if t.rc != 0]
            if not ended or bad:
                return fails + mpitest.verdict(name, False, "tasks %s failed" % bad, c.summary())
            bad = logs_say(folder, 4, SHARED if shared == "on" else PRIVATE)
            fails += mpitest.verdict(name + " rank logs", not bad, "ranks %s do not say it" % bad)
            w[name] = TC.weights(os.path.join(folder, "outputs", "model", "model.h5"))
            names.append(name)
        if not np.any(w[names[0]]["dense_2/bias:0"]):
            fails += mpitest.verdict(names[0] + " trained", False, "the biases are still zero")
        # bf16: overlap's per-layer rings round other segments (other bits)
        pairs = [(0, 1), (2, 3)] + ([(0, 2)] if comp == "none" else [])
        for a, b in pairs:
            fails += mpitest.verdict("bit-identical %s %s" % (names[a], names[b]),
                                     bit_identical(w[names[a]], w[names[b]]), "weights differ")
    return fails


def flag_differs(tmp, data):
    """Rank 1 given --shared-gradients off against rank 0's on: every rank
    stops at start-up, naming the flag (the node's ranks must take one path)."""
    folder = os.path.join(tmp, "differs")
    app = ["-np", "1", mpitest.TFDIST, "train", "--data-folder", data, "--outputs",
           os.path.join(folder, "out"), "--logs", os.path.join(folder, "logs"), "--progress", "off",
           "--allreduce", "hier", "--epochs", "1", "--max-steps", "3"]
    cmd = (["timeout", "-k", "5", "110"] + mpitest.MPIRUN + app + [":"] + app +
           ["--shared-gradients", "off"])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=130)
    ok = p.returncode not in (0, 124, 137) and \
        "rank 1's --shared-gradients differs from rank 0's" in p.stdout
    return mpitest.verdict("--shared-gradients differs", ok, "exit %d" % p.returncode, p.stdout)


def main():
    before = mpitest.shm_entries()
    with tempfile.TemporaryDirectory() as tmp:
        data = mpitest.write_data(tmp)
        ref = os.path.join(tmp, "n1")
        rc, out = mpitest.run_train(1, ref, data, ["--epochs", "1", "--max-steps", str(STEPS),
                                                   "--seed", "7", "--learning-rate", "0.05",
                                                   "--batch-size", "100", "--allreduce", "ring"])
        if rc != 0:
            return mpitest.verdict("n1", False, "exit %d" % rc, out)
        w1 = mpitest.weights(ref)
        fails, w = mpi_runs(tmp, data, 2)
        for name in sorted(w):
            d = mpitest.max_abs_diff(w1, w[name])
            print("%s vs n1 after %d steps: max |dw| = %.3g" % (name, STEPS, d))
            fails += mpitest.verdict("equivalence-" + name, d <= TOL, "%.3g > %g" % (d, TOL))
        fails += mpi_runs(tmp, data, 3)[0]
        fails += cluster_runs(tmp, data)
        fails += flag_differs(tmp, data)
    left = mpitest.shm_entries() - before
    fails += mpitest.verdict("nothing left in /dev/shm", not left, "left: %s" % sorted(left))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
