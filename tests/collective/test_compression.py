"""--compression bf16|fp16 under real mpirun -np 2 --allreduce ring:

- one step against a float64 oracle: run A takes one step and checkpoints,
  run B resumes and takes one more; the oracle reads A's weights (h5py),
  computes each rank's gradient in float64 on its slice of the epoch-2
  permutation (base_perm_epoch, ported), and rounds as README "Gradient
  compression" documents (segment j starts at rank j: R(x_j), the other
  rank adds its term in fp32, the owner halves, R once more; fp16 with the
  checkpoint's scale). bf16 is rounded here in float64 arithmetic (np.rint,
  ties to even), fp16 by numpy's float16. B's weights must match within
  1e-6 wherever no rounding is within 1e-2 of a 16-bit ulp of a tie (there
  the fp32 gradient may fall on either side: within one 16-bit ulp), and an
  oracle without the rounding must miss by far more (the test can fail);
- fp16 overflow: TFDIST_FAULT_INFLATE_* makes rank 1's gradient overflow at
  step 3: every rank skips that update (the weights equal those of a run
  stopped after step 2, bit for bit), the rank logs and metrics.jsonl count
  it, the scale halves; 30 overflows in a row stop the run (exit 1, one
  line, run.json Failed, no model);
- determinism: two bf16 runs of 30 steps are bit-identical, and differ from
  --compression none; a resume with another --compression is refused (exit
  2, one line); --allreduce mpi with compression is refused (exit 2);
- resume: fp16's scale (halved by an overflow in epoch 1) goes through the
  checkpoint, and the resumed run ends bit-identical to the straight one;
- tcp: a chief + worker TF_CONFIG cluster with fp16 gives the weights of
  mpirun -np 2 --allreduce ring, bit for bit."""
import json
import os
import tempfile

import h5py
import numpy as np

import idxgen
import mpitest
import tfdtest as T
import tfcluster as TC

LR = 0.5
B = 25
TOL = 1e-6
MASK = (1 << 64) - 1


# ---- base/rng.c, ported: SplitMix64 and the per-epoch permutation ----

def rng_mix(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK
    return z ^ (z >> 31)


class Rng:
    def __init__(self, seed, stream, sub):
        self.state = rng_mix(seed) ^ rng_mix((stream * 0x9e3779b97f4a7c15 + sub) & MASK)

    def next(self):
        self.state = (self.state + 0x9e3779b97f4a7c15) & MASK
        return rng_mix(self.state)

    def below(self, n):
        m = (self.next() >> 32) * n
        low = m & 0xffffffff
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                m = (self.next() >> 32) * n
                low = m & 0xffffffff
        return m >> 32


def perm_epoch(n, seed, epoch):
    r = Rng(seed, 2, epoch)  # DATA_RNG_STREAM_EPOCH
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = r.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


# ---- the model in float64 ----

def read_params(path):
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        ts = [np.array(g[l][l][k], np.float64) for l in mpitest.LAYERS for k in ("kernel:0", "bias:0")]
        scale = float(f.attrs["fp16_scale"]) if "fp16_scale" in f.attrs else None
    return ts, scale


def flat(ts):
    return np.concatenate([t.ravel() for t in ts])


def grad(ts, x, y):
    w1, b1, w2, b2, w3, b3 = ts
    z1 = x @ w1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ w2 + b2
    h2 = np.maximum(z2, 0)
    z3 = h2 @ w3 + b3
    p = np.exp(z3 - z3.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d3 = p.copy()
    d3[np.arange(len(y)), y] -= 1
    d3 /= len(y)
    d2 = (d3 @ w3.T) * (z2 > 0)
    d1 = (d2 @ w2.T) * (z1 > 0)
    return flat([x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d3, d3.sum(0)])


def round16(v, comp, scale):
    """R(v) of float32 values v, and how far each was from a tie (in 16-bit ulps)."""
    v = np.asarray(v, np.float32)
    if comp == "fp16":
        s = v.astype(np.float64) * scale
        r = s.astype(np.float32).astype(np.float16).astype(np.float64) / scale
        _, e = np.frexp(s)
        ulp = np.ldexp(1.0, np.maximum(e - 1, -14) - 10)
    else:
        s = v.astype(np.float64)
        _, e = np.frexp(s)
        ulp = np.ldexp(1.0, np.maximum(e - 1, -126) - 7)
        r = np.rint(s / ulp) * ulp  # rint: ties to even
    q = s / ulp
    margin = np.abs(np.abs(q - np.floor(q)) - 0.5)
    return r.astype(np.float32), margin


def oracle_step(ts, data, perm, comp, scale):
    """The step's averaged gradient as the ring makes it, and where a tie is near."""
    imgs, labels = data
    gs = []
    for r in range(2):
        rows = perm[r * B:(r + 1) * B]
        gs.append(grad(ts, imgs[rows].astype(np.float64) / 255.0, labels[rows].astype(np.int64)))
    x = [g.astype(np.float32) for g in gs]
    P = len(x[0])
    seg = np.arange(P) >= P // 2  # segment 1 starts at rank 1
    first = np.where(seg, x[1], x[0])
    other = np.where(seg, x[0], x[1])
    if comp == "none":
        return (gs[0] + gs[1]) / 2, np.zeros(P, bool)
    r1, m1 = round16(first, comp, scale)
    p2 = other + r1  # fp32
    res, m2 = round16(p2 / np.float32(2), comp, scale)
    near = (m1 < 1e-2) | (m2 < 1e-2)
    return res.astype(np.float64), near


def oracle_check(tmp, data_dir, data, comp):
    folder_a = os.path.join(tmp, "step-a-" + comp)
    folder_b = os.path.join(tmp, "step-b-" + comp)
    common = ["--seed", "5", "--batch-size", str(B), "--learning-rate", str(LR), "--max-steps",
              "1", "--allreduce", "ring", "--overlap", "off", "--compression", comp]
    rc, out = mpitest.run_train(2, folder_a, data_dir, common + ["--epochs", "1",
                                "--checkpoint-every", "1"])
    if not T.check(rc == 0, "%s: step A exits 0 (%s)" % (comp, out[-800:] if rc else "")):
        return
    ck = os.path.join(folder_a, "outputs", "checkpoints", "ckpt-epoch-1.h5")
    rc, out = mpitest.run_train(2, folder_b, data_dir, common + ["--epochs", "2", "--resume-from", ck])
    if not T.check(rc == 0, "%s: step B (resumed) exits 0 (%s)" % (comp, out[-800:] if rc else "")):
        return
    ts, scale = read_params(ck)
    T.check(comp != "fp16" or scale == 1024.0, "%s: checkpoint's fp16_scale %s is 2^10" % (comp, scale))
    perm = perm_epoch(len(data[1]), 5, 1)
    w0 = flat(ts)
    got = flat([mpitest.weights(folder_b)[l + "/" + k].astype(np.float64)
                for l in mpitest.LAYERS for k in ("kernel:0", "bias:0")])
    g, near = oracle_step(ts, data, perm, comp, scale)
    want = w0 - LR * g
    d = np.abs(got - want)
    far = ~near
    T.check(d[far].max() <= TOL, "%s: one step vs the float64 oracle: max |dw| %.3g over %d weights "
            "clear of ties (<= %g)" % (comp, d[far].max(), far.sum(), TOL))
    bound = LR * np.abs(g[near]) * (2.0 ** -7 if comp == "bf16" else 2.0 ** -10) + TOL
    T.check(np.all(d[near] <= bound) and near.mean() < 0.05,
            "%s: %d weights near a tie (%.2f%%) within one 16-bit ulp" % (comp, near.sum(),
                                                                          100 * near.mean()))
    plain, _ = oracle_step(ts, data, perm, "none", None)
    miss = np.abs(got - (w0 - LR * plain)).max()
    T.check(miss > 20 * TOL, "%s: the oracle without 16-bit rounding misses by %.3g (the rounding "
            "shows)" % (comp, miss))


def overflow_check(tmp, data_dir):
    common = ["--seed", "3", "--batch-size", "10", "--epochs", "1", "--allreduce", "ring",
              "--compression", "fp16"]
    fault = ["-x", "TFDIST_FAULT_INFLATE_RANK=1", "-x", "TFDIST_FAULT_INFLATE_STEP=3"]
    fa, fb = os.path.join(tmp, "ovf-a"), os.path.join(tmp, "ovf-b")
    rc_a, out_a = mpitest.run_train(2, fa, data_dir, common + ["--max-steps", "4"], fault)
    rc_b, out_b = mpitest.run_train(2, fb, data_dir, common + ["--max-steps", "3"])
    if not T.check(rc_a == 0 and rc_b == 0, "fp16 overflow run and its reference exit 0 (%s)"
                   % (out_a[-600:] + out_b[-600:] if rc_a or rc_b else "")):
        return
    wa, wb = mpitest.weights(fa), mpitest.weights(fb)
    T.check(all(np.isfinite(v).all() for v in wa.values()), "fp16 overflow: every weight finite")
    same = T.bits_equal(wa, wb)
    T.check(same, "fp16 overflow: step 3 skipped on every rank (weights equal a 3-step run's, bit "
            "for bit)")
    for r in range(2):
        with open(os.path.join(fa, "logs", "rank-%d.log" % r)) as f:
            log = f.read()
        T.check("step 3: fp16 overflow in the averaged gradient at scale 2^10: update skipped on "
                "every rank (1 so far), scale now 2^9" in log, "fp16 overflow: rank %d's log says so" % r)
    rows = [json.loads(l) for l in open(os.path.join(fa, "outputs", "metrics.jsonl"))]
    count = [x["value"] for x in rows if x["name"] == "fp16_overflow_steps"]
    scale = [x["value"] for x in rows if x["name"] == "fp16_scale"]
    T.check(count and count[-1] == 1 and scale == [512], "fp16 overflow: metrics.jsonl counts 1, "
            "scale 512 (%s, %s)" % (count, scale))
    # overflow after overflow: the run stops
    fc = os.path.join(tmp, "ovf-stop")
    # 1e12: beyond fp16 even at scale 2^-14 (a factor the scale can absorb
    # is trained on once the scale is low enough, as GradScaler would)
    stop = ["-x", "TFDIST_FAULT_INFLATE_STEPS=30", "-x", "TFDIST_FAULT_INFLATE_FACTOR=1000000000000"]
    rc, out = mpitest.run_train(2, fc, data_dir, ["--seed", "3", "--batch-size", "5", "--epochs",
                                "2", "--allreduce", "ring", "--compression", "fp16"], fault + stop)
    lines = [l for l in out.splitlines() if "steps in a row overflowed" in l]
    T.check(rc == 1 and lines and all(len(l) < 600 for l in lines),
            "fp16: 24 overflows in a row stop the run: exit %d, %s" % (rc, lines[:1]))
    with open(os.path.join(fc, "outputs", "run.json")) as f:
        status = json.load(f).get("status")
    T.check(status == "Failed" and not os.path.exists(os.path.join(fc, "outputs", "model", "model.h5")),
            "fp16 stop: run.json %s, no model saved" % status)


def determinism_check(tmp, data_dir):
    common = ["--seed", "9", "--batch-size", "10", "--epochs", "2", "--max-steps", "15",
              "--allreduce", "ring", "--checkpoint-every", "1"]
    w = {}
    for name, comp in (("bf16-a", "bf16"), ("bf16-b", "bf16"), ("none", "none")):
        rc, out = mpitest.run_train(2, os.path.join(tmp, "det-" + name), data_dir,
                                    common + ["--compression", comp])
        if not T.check(rc == 0, "determinism: %s exits 0 (%s)" % (name, out[-600:] if rc else "")):
            return
        w[name] = mpitest.weights(os.path.join(tmp, "det-" + name))
    same = T.bits_equal(w["bf16-a"], w["bf16-b"])
    T.check(same, "determinism: two bf16 runs, 30 steps: bit-identical")
    d = mpitest.max_abs_diff(w["none"], w["bf16-a"])
    T.check(d > 1e-6, "bf16 changes the math: max |dw| against none %.3g" % d)
    ck = os.path.join(tmp, "det-bf16-a", "outputs", "checkpoints", "ckpt-epoch-1.h5")
    rc, out = mpitest.run_train(2, os.path.join(tmp, "det-resume"), data_dir,
                                common + ["--compression", "fp16", "--resume-from", ck])
    want = "--compression is 'fp16' but the checkpoint has 'bf16'"
    lines = [l for l in out.splitlines() if want in l]
    T.check(rc == 2 and lines and all(len(l) < 600 for l in lines),
            "resume with another --compression: exit %d, %s" % (rc, lines[:1]))
    rc, out = mpitest.run_train(2, os.path.join(tmp, "mpi-bf16"), data_dir,
                                ["--allreduce", "mpi", "--compression", "bf16", "--epochs", "1"])
    T.check(rc == 2 and "--compression bf16: the mpi back end" in out,
            "--allreduce mpi --compression bf16: exit %d" % rc)


def resume_check(tmp, data_dir):
    """fp16's scale goes through the checkpoint: an overflow in epoch 1 halves
    it, and a resume from epoch 1 ends bit-identical to the straight run."""
    common = ["--seed", "8", "--batch-size", "10", "--epochs", "2", "--max-steps", "8",
              "--allreduce", "ring", "--compression", "fp16", "--checkpoint-every", "1"]
    fault = ["-x", "TFDIST_FAULT_INFLATE_RANK=0", "-x", "TFDIST_FAULT_INFLATE_STEP=2"]
    fs, fr = os.path.join(tmp, "res-straight"), os.path.join(tmp, "res-resumed")
    rc, out = mpitest.run_train(2, fs, data_dir, common, fault)
    if not T.check(rc == 0, "fp16 resume: straight run exits 0 (%s)" % (out[-600:] if rc else "")):
        return
    ck = os.path.join(fs, "outputs", "checkpoints", "ckpt-epoch-1.h5")
    with h5py.File(ck, "r") as f:
        attrs = {k: f.attrs[k] for k in ("fp16_scale", "fp16_overflow_steps")}
    T.check(attrs["fp16_scale"] == 512 and attrs["fp16_overflow_steps"] == 1,
            "fp16 resume: the epoch-1 checkpoint holds scale 512 and 1 overflow (%s)" % attrs)
    rc, out = mpitest.run_train(2, fr, data_dir, common + ["--resume-from", ck])
    if not T.check(rc == 0, "fp16 resume: resumed run exits 0 (%s)" % (out[-600:] if rc else "")):
        return
    a, b = mpitest.weights(fs), mpitest.weights(fr)
    same = T.bits_equal(a, b)
    T.check(same, "fp16 resume from epoch 1 (scale 512) = the straight run, bit for bit")
    # a power-of-two scale rounds normal values alike, so the weights alone
    # would not show a scale lost on resume: the resumed run's records must
    rows = [json.loads(l) for l in open(os.path.join(fr, "outputs", "metrics.jsonl"))]
    ep2 = {x["name"]: x["value"] for x in rows if x["epoch"] == 2 and x["name"].startswith("fp16")}
    T.check(ep2 == {"fp16_scale": 512, "fp16_overflow_steps": 1},
            "fp16 resume: epoch 2 goes on at scale 512 with 1 overflow counted (%s)" % ep2)


def tcp_check(tmp):
    """A TF_CONFIG cluster's tcp ring compresses as the MPI ring does: bit for bit."""
    data = TC.make_data(os.path.join(tmp, "tcp-data"))
    args = ["--seed", "4", "--batch-size", "10", "--max-steps", "15", "--epochs", "2",
            "--compression", "fp16", "--overlap", "on"]
    fm, fc = os.path.join(tmp, "tcp-mpi"), os.path.join(tmp, "tcp-cluster")
    rc, out = TC.run_mpi(2, fm, data, args + ["--allreduce", "ring"])
    ref, why = TC.try_weights(os.path.join(fm, "outputs", "model", "model.h5")) if rc == 0 else (None, out[-600:])
    if not T.check(ref is not None, "mpirun -np 2 ring fp16: %s" % why):
        return
    c = TC.run_cluster(fc, TC.cluster_spec(1, 1), TC.train_args(fc, data, args), limit_s=60)
    w, why = TC.try_weights(os.path.join(fc, "outputs", "model", "model.h5"))
    if not T.check(w is not None, "chief+worker tcp fp16: %s\n%s" % (why, c.summary())):
        return
    same = T.bits_equal(w, ref)
    T.check(same, "tcp ring fp16 (chief+worker) = mpirun -np 2 ring fp16, 30 steps, bit for bit")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        rng = np.random.default_rng(21)
        paths = idxgen.write_set(data_dir, rng, n_train=200, n_test=50, gz=False)
        with open(paths["train-images"], "rb") as f:
            imgs = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 784)
        with open(paths["train-labels"], "rb") as f:
            labels = np.frombuffer(f.read()[8:], np.uint8)
        for comp in ("bf16", "fp16"):
            oracle_check(tmp, data_dir, (imgs, labels), comp)
        overflow_check(tmp, data_dir)
        determinism_check(tmp, data_dir)
        resume_check(tmp, data_dir)
        tcp_check(tmp)


if __name__ == "__main__":
    main()
    T.done()
