"""--compression: what a skipped fp16 step leaves, and where compression does
not apply, under real mpirun -np 2 (h5py reads the checkpoints):

- a skipped step leaves the optimizer alone (PyTorch's GradScaler skips
  optimizer.step()): with --optimizer adam, TFDIST_FAULT_INFLATE_* makes rank
  1's gradient overflow at global step 2, the last of epoch 1 (3 steps); the
  epoch-1 checkpoint's weights, optimizer state (Adam's m and v) and
  optimizer/step (Adam's t: 2, not 3) equal bit for bit those of a run of 2
  steps with no fault; after epoch 2 optimizer/step is 5 (6 steps, 1
  skipped); an exact resume from the epoch-1 checkpoint (after the skip)
  ends bit-identical to the straight run, and one from a file whose
  optimizer/step counts the skipped step is refused (exit 2); in the math: with one step
  per epoch, the second overflowed, the third step's weight changes are
  Adam's with t = 2 (from its m and v, as kernels/cpu_opt.c computes them),
  not t = 3;
- --backward-passes-per-step 2 with fp16: the overflow at global step 2
  skips that whole update (epoch-1 weights equal a 2-step run's), the next
  update accumulates from zero: the log counts exactly 1 overflow, the
  weights stay finite, and the straight run equals one resumed from the
  epoch-1 checkpoint (whose accumulation starts from zero) bit for bit;
- hier on one node: --allreduce hier --compression fp16 gives --allreduce
  shm's fp32 weights bit for bit after 15 steps, the rank log says
  compression does not apply, run.json's compression says it does not
  compress, and the fp16 scaler is off (no fp16_* rows in metrics.jsonl;
  --allreduce ring fp16, the control, compresses and has them);
- a TF_CONFIG cluster with ps tasks refuses --compression on every task
  (chief, worker, ps): one line, exit 2."""
import json
import os
import shutil
import tempfile

import h5py
import numpy as np

import idxgen
import mpitest
import tfdtest as T
import tfcluster as TC


def ckpt(folder, epoch):
    """A checkpoint's weights, optimizer state and optimizer/step."""
    path = os.path.join(folder, "outputs", "checkpoints", "ckpt-epoch-%d.h5" % epoch)
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        w = {l + "/" + k: np.array(g[l][l][k], np.float32) for l in mpitest.LAYERS
             for k in ("kernel:0", "bias:0")}
        w["optimizer/state"] = np.array(f["optimizer"]["state"], np.float32)
        return w, int(f["optimizer"].attrs["step"]), path


def overflows_logged(folder):
    n = 0
    for r in range(2):
        with open(os.path.join(folder, "logs", "rank-%d.log" % r)) as f:
            n = max(n, f.read().count("fp16 overflow in the averaged gradient"))
    return n


def train(tmp, name, data_dir, extra, fault=()):
    folder = os.path.join(tmp, name)
    rc, out = mpitest.run_train(2, folder, data_dir, extra, fault)
    T.check(rc == 0, "%s exits 0 (%s)" % (name, out[-800:] if rc else ""))
    return folder if rc == 0 else None


FAULT = ["-x", "TFDIST_FAULT_INFLATE_RANK=1", "-x", "TFDIST_FAULT_INFLATE_STEP=2"]


def skip_check(tmp, data_dir, what, extra):
    """Epoch 1 has 3 steps, the last overflowed; the reference stops after 2."""
    common = ["--seed", "6", "--batch-size", "10", "--allreduce", "ring", "--compression", "fp16",
              "--checkpoint-every", "1"] + extra + ["--max-steps"]
    fa = train(tmp, what + "-skip", data_dir, common + ["3", "--epochs", "2"], FAULT)
    fb = train(tmp, what + "-2steps", data_dir, common + ["2", "--epochs", "1"])
    if not fa or not fb:
        return
    wa, ta, path = ckpt(fa, 1)
    wb, tb, _ = ckpt(fb, 1)
    T.check(T.bits_equal(wa, wb), "%s: the skipped step leaves weights and optimizer state as a 2-step "
            "run's, bit for bit" % what)
    if "adam" in extra:
        # Adam's moments one by one (interleaved m, v per weight), against the
        # run without that update, and alive: non-zero, moved on by epoch 2
        st_a, st_b = wa["optimizer/state"], wb["optimizer/state"]
        st_end = ckpt(fa, 2)[0]["optimizer/state"]
        P = sum(v.size for k, v in wa.items() if k != "optimizer/state")
        for k, name in ((0, "m"), (1, "v")):
            a, b, end = st_a[k::2], st_b[k::2], st_end[k::2]
            T.check(a.size == P and T.bits_equal([a], [b]) and
                    np.count_nonzero(a) > a.size // 2 and not np.array_equal(a, end),
                    "%s: Adam's %s after the skip equals the 2-step run's bit for bit (%d of %d "
                    "non-zero; changed by epoch 2)" % (what, name, np.count_nonzero(a), a.size))
    T.check(ta == tb == 2, "%s: optimizer/step after 2 updates and 1 skip: %d (2-step run: %d)"
            % (what, ta, tb))
    T.check(overflows_logged(fa) == 1, "%s: exactly 1 overflow logged (%d): the next update's "
            "gradient is finite" % (what, overflows_logged(fa)))
    w_end, t_end, _ = ckpt(fa, 2)
    T.check(t_end == 5, "%s: optimizer/step after 6 steps, 1 skipped: %d" % (what, t_end))
    T.check(all(np.isfinite(v).all() for v in w_end.values()), "%s: every weight finite" % what)
    fr = train(tmp, what + "-resumed", data_dir,
               common + ["3", "--epochs", "2", "--resume-from", path])
    if fr:
        T.check(T.bits_equal(mpitest.weights(fa), mpitest.weights(fr)),
                "%s: resumed after the skip = the straight run, bit for bit" % what)
    # a file whose optimizer/step counts the skipped step (as before the fix)
    bad = os.path.join(tmp, what + "-old-step.h5")
    shutil.copyfile(path, bad)
    with h5py.File(bad, "r+") as f:
        f["optimizer"].attrs["step"] = np.int64(3)
    rc, out = mpitest.run_train(2, os.path.join(tmp, what + "-old"), data_dir,
                                common + ["3", "--epochs", "2", "--resume-from", bad])
    want = "optimizer/step is 3 but the checkpoint's 3 steps less 1 skipped fp16 steps make 2"
    lines = [l for l in out.splitlines() if want in l]
    T.check(rc == 2 and lines and all(len(l) < 1000 for l in lines),
            "%s: resume from a file whose optimizer/step counts the skip: exit %d, %s"
            % (what, rc, lines[:1] or out[-300:]))


def adam_state(path):
    """Weights (flat, float64), m, v (float64) and the optimizer's attributes."""
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        w = np.concatenate([np.array(g[l][l][k], np.float64).ravel() for l in mpitest.LAYERS
                            for k in ("kernel:0", "bias:0")])
        st = np.array(f["optimizer"]["state"], np.float64)
        attrs = {k: f["optimizer"].attrs[k] for k in ("step", "beta1", "beta2", "epsilon",
                                                      "learning_rate_effective")}
    return w, st[0::2], st[1::2], attrs


def adam_t_check(tmp, data_dir):
    """One step per epoch, the second overflowed: the third applies Adam with
    t = 2 (the updates applied), not 3 (the steps taken). The change of each
    weight is -lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) with the m and
    v after it (cpu_opt.c), weight by weight (the state is in the weights'
    order, m and v interleaved); and m and v are one update from step 0's,
    with one gradient."""
    fault = ["-x", "TFDIST_FAULT_INFLATE_RANK=1", "-x", "TFDIST_FAULT_INFLATE_STEP=1"]
    f = train(tmp, "adam-t", data_dir, ["--seed", "6", "--batch-size", "10", "--allreduce",
              "ring", "--compression", "fp16", "--checkpoint-every", "1", "--optimizer", "adam",
              "--max-steps", "1", "--epochs", "3"], fault)
    if not f:
        return
    path = lambda e: os.path.join(f, "outputs", "checkpoints", "ckpt-epoch-%d.h5" % e)
    w1, m1, v1, a1 = adam_state(path(1))
    w2, m2, v2, a2 = adam_state(path(2))
    w3, m3, v3, a3 = adam_state(path(3))
    T.check(np.array_equal(w1, w2) and np.array_equal(m1, m2) and np.array_equal(v1, v2),
            "adam t: the skipped step 1 leaves weights, m and v as step 0 left them")
    T.check((a1["step"], a2["step"], a3["step"]) == (1, 1, 2),
            "adam t: optimizer/step 1, 1 (skipped), 2: %s" % [a1["step"], a2["step"], a3["step"]])
    dw = w3 - w2
    err = {}
    for t in (2, 3):
        step = np.float64(np.float32(a3["learning_rate_effective"] / (1 - a3["beta1"] ** t)))
        bc2 = np.float64(np.float32(np.sqrt(1 - a3["beta2"] ** t)))
        model = -step * (m3 / (np.sqrt(v3) / bc2 + np.float64(np.float32(a3["epsilon"]))))
        err[t] = float(np.abs(dw - model).max())
    T.check(np.abs(dw).max() > 1e-4 and err[2] <= 1e-6 and err[3] > 1e-5,
            "adam t: step 2's weight changes match Adam with t=2, weight by weight (max err %.3g; "
            "with t=3: %.3g; max |dw| %.3g)" % (err[2], err[3], np.abs(dw).max()))
    # m and v: one moment update from what step 0 left (the skip touched
    # neither), with one gradient g: m3 = b1 m2 + (1-b1) g, v3 = b2 v2 + (1-b2) g^2
    b1, b2 = a3["beta1"], a3["beta2"]
    g = (m3 - b1 * m2) / (1 - b1)
    miss = float(np.abs(v3 - (b2 * v2 + (1 - b2) * g * g)).max())
    stale = float(np.abs(v3 - b2 * v2).max())
    T.check(np.count_nonzero(g) > g.size // 2 and miss <= 1e-4 * v3.max() and stale > 1e-2 * v3.max(),
            "adam t: m and v after step 2 are one update from step 0's with one gradient (max err "
            "%.3g of max v %.3g; without the gradient %.3g)" % (miss, v3.max(), stale))


def compression_record(folder):
    """run.json's compression and the fp16 scaler's rows in metrics.jsonl."""
    with open(os.path.join(folder, "outputs", "run.json")) as f:
        rec = json.load(f).get("compression", {})
    with open(os.path.join(folder, "outputs", "metrics.jsonl")) as f:
        rows = [json.loads(l)["name"] for l in f]
    return rec, sum(n.startswith("fp16_") for n in rows)


def hier_one_node_check(tmp, data_dir):
    common = ["--seed", "7", "--batch-size", "10", "--epochs", "1", "--max-steps", "15"]
    fh = train(tmp, "hier-fp16", data_dir, common + ["--allreduce", "hier", "--compression", "fp16"])
    fs = train(tmp, "shm-none", data_dir, common + ["--allreduce", "shm"])
    fr = train(tmp, "ring-fp16", data_dir, common + ["--allreduce", "ring", "--compression", "fp16"])
    if not fh or not fs or not fr:
        return
    wh, ws = mpitest.weights(fh), mpitest.weights(fs)
    T.check(T.bits_equal(wh, ws), "hier fp16 on one node = shm fp32 after 15 steps, bit for bit")
    d = mpitest.max_abs_diff(ws, mpitest.weights(fr))
    T.check(d > 0, "control: ring fp16 differs from shm fp32 (max |dw| %.3g)" % d)
    for r in range(2):
        with open(os.path.join(fh, "logs", "rank-%d.log" % r)) as f:
            log = f.read()
        T.check("compression: fp16 does not apply: hier on one node has no ring across nodes" in log,
                "hier fp16 on one node: rank %d's log says compression does not apply" % r)
    # coll_comm_compresses decides the scaler and run.json alike
    (rec_h, rows_h), (rec_r, rows_r) = compression_record(fh), compression_record(fr)
    T.check(rec_h.get("setting") == "fp16" and rec_h.get("compresses") is False and rows_h == 0,
            "hier fp16 on one node: run.json %s, %d fp16 scaler rows in metrics.jsonl (none: the "
            "scaler is off)" % (rec_h, rows_h))
    T.check(rec_r.get("compresses") is True and rows_r == 2,
            "control: ring fp16: run.json %s, %d fp16 scaler rows" % (rec_r, rows_r))


def ps_check(tmp):
    data = TC.make_data(os.path.join(tmp, "ps-data"), n_train=200, n_test=50)
    spec = TC.cluster_spec(1, 1, 1)
    for kind in ("chief", "worker", "ps"):
        folder = os.path.join(tmp, "ps-" + kind)
        rc, out, err = TC.run_plain(folder, data, ["--compression", "fp16"], limit_s=30,
                                    env_extra={"TF_CONFIG": TC.tf_config(spec, kind, 0)})
        lines = [l for l in (out + err).splitlines() if "--compression fp16: this TF_CONFIG "
                 "cluster has 1 ps task(s)" in l]
        T.check(rc == 2 and len(lines) == 1 and len(lines[0]) < 400,
                "ps cluster, %s with --compression fp16: exit %s, %s" % (kind, rc, lines or err[-300:]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        idxgen.write_set(data_dir, np.random.default_rng(31), n_train=200, n_test=50, gz=False)
        skip_check(tmp, data_dir, "adam", ["--optimizer", "adam"])
        adam_t_check(tmp, data_dir)
        skip_check(tmp, data_dir, "K=2", ["--backward-passes-per-step", "2"])
        hier_one_node_check(tmp, data_dir)
        ps_check(tmp)


if __name__ == "__main__":
    main()
    T.done()
