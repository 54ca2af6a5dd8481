"""`tfdist train` on the GPU against the CPU on the same synthetic data and
seed: 1 rank (the fused step as a graph and eagerly, op by op, TF32) and 2 ranks sharing the one
GPU over the ring back end (host-staged); --backward-passes-per-step 4 (op by
op, as a graph of the 4 micro-batches and eagerly) against the CPU's. Per-epoch loss and accuracy and the
final weights must agree within tolerance. Exits 77 without a GPU.

Env: TFDIST (the binary or the bundle's wrapper), MPIRUN (default mpirun)."""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import numpy as np

import idxgen

TFDIST = os.environ.get("TFDIST", "tfdist")
MPIRUN = shlex.split(os.environ.get("MPIRUN", "mpirun"))
FAILS = []


def run(cmd, cwd, timeout=240):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        print("FAILED:", " ".join(cmd), "\n", p.stdout[-2000:], p.stderr[-3000:])
        FAILS.append(" ".join(cmd[:6]))
    return p


def gpus_visible():
    p = subprocess.run([TFDIST, "--check-build"], capture_output=True, text=True, timeout=60)
    m = re.search(r"GPUs visible: (\d+)(.*)", p.stdout)
    if not m:
        return 0, "not a CUDA build"
    return int(m.group(1)), m.group(2).strip()


def metrics(out_dir):
    rows = {}
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["name"], {})[r["epoch"]] = r["value"]
    return rows


def weights(out_dir):
    try:
        import h5py
    except ImportError:
        return None
    with h5py.File(os.path.join(out_dir, "model", "model.h5"), "r") as f:
        mw = f["model_weights"]
        return [np.asarray(mw[L][L][n]) for L in ("dense", "dense_1", "dense_2")
                for n in ("kernel:0", "bias:0")]


def train(tmp, tag, data, extra, ranks=1):
    out, logs = os.path.join(tmp, tag, "out"), os.path.join(tmp, tag, "logs")
    cmd = [TFDIST, "train", "--data-folder", data, "--epochs", "2", "--seed", "3",
           "--outputs", out, "--logs", logs, "--progress", "off"] + extra
    if ranks > 1:
        cmd = MPIRUN + ["-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    p = run(cmd, tmp)
    if p.returncode != 0:
        return None
    return metrics(out), weights(out)


def compare(name, ref, got, loss_rtol, acc_atol, w_atol):
    if ref is None or got is None:
        FAILS.append(name + ": a run failed")
        return
    (mr, wr), (mg, wg) = ref, got
    for epoch in sorted(mr["loss"]):
        lr, lg = mr["loss"][epoch], mg["loss"][epoch]
        ar, ag = mr["validation_acc"][epoch], mg["validation_acc"][epoch]
        ok = abs(lg - lr) <= loss_rtol * abs(lr) and abs(ag - ar) <= acc_atol
        print(f"  {name:34s} epoch {epoch}: loss {lg:.6f} vs {lr:.6f}  "
              f"val_acc {ag:.4f} vs {ar:.4f}  {'ok' if ok else 'FAIL'}")
        if not ok:
            FAILS.append(f"{name} epoch {epoch}")
    if wr is not None and wg is not None:
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(wg, wr))
        ok = err <= w_atol
        print(f"  {name:34s} final weights max|err| {err:.3g} (atol {w_atol:g})"
              f"  {'ok' if ok else 'FAIL'}")
        if not ok:
            FAILS.append(f"{name} weights")


def main():
    n, why = gpus_visible()
    if n <= 0:
        print(f"SKIP: no GPU ({why})")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        idxgen.write_set(data, np.random.default_rng(5), n_train=2000, n_test=500)
        # Tolerances: 80 SGD steps of float32 GEMMs in different summation
        # orders drift by ~1e-5 relative; a ReLU mask flipped by rounding at
        # zero moves one weight by ~lr*1e-3. Accuracy: one test sample is 0.002.
        cpu = train(tmp, "cpu1", data, ["--device", "cpu"])
        compare("1 rank cuda graph vs cpu", cpu,
                train(tmp, "gpu1", data, ["--device", "cuda"]), 1e-4, 0.0041, 1e-4)
        compare("1 rank cuda op by op vs cpu", cpu,
                train(tmp, "gpu1o", data, ["--device", "cuda", "--fused-step", "off"]),
                1e-4, 0.0041, 1e-4)
        compare("1 rank cuda eager vs cpu", cpu,
                train(tmp, "gpu1e", data, ["--device", "cuda", "--graph", "off"]),
                1e-4, 0.0041, 1e-4)
        compare("1 rank cuda tf32 vs cpu", cpu,
                train(tmp, "gpu1t", data, ["--device", "cuda", "--math", "tf32"]),
                1e-2, 0.02, 1e-2)
        cpu2 = train(tmp, "cpu2", data, ["--device", "cpu", "--allreduce", "ring"], ranks=2)
        compare("2 ranks 1 gpu ring vs cpu 2 ranks", cpu2,
                train(tmp, "gpu2", data, ["--device", "cuda", "--allreduce", "ring"], ranks=2),
                1e-4, 0.0041, 1e-4)
        # K micro-batches accumulate: the fused step (which overwrites the
        # gradient) steps aside; the graph records all K.
        k4 = ["--batch-size", "25", "--backward-passes-per-step", "4"]
        cpu_k4 = train(tmp, "cpuk4", data, ["--device", "cpu"] + k4)
        compare("1 rank cuda graph K=4 vs cpu K=4", cpu_k4,
                train(tmp, "gpuk4", data, ["--device", "cuda"] + k4), 1e-4, 0.0041, 1e-4)
        compare("1 rank cuda eager K=4 vs cpu K=4", cpu_k4,
                train(tmp, "gpuk4e", data, ["--device", "cuda", "--graph", "off"] + k4),
                1e-4, 0.0041, 1e-4)
        # The fused step runs where promised (one rank, FP32, graph or
        # eager, K=1) and nowhere else (off, TF32, two ranks, K=4).
        for tag, want in (("gpu1", True), ("gpu1e", True), ("gpu1o", False), ("gpu1t", False),
                          ("gpu2", False), ("gpuk4", False), ("gpuk4e", False)):
            log = os.path.join(tmp, tag, "logs", "rank-0.log")
            text = open(log).read() if os.path.exists(log) else ""
            fused = "step: fused" in text
            print(f"  {tag}: fused step {'used' if fused else 'not used'} (want {want})")
            if fused != want or "step: " not in text:
                FAILS.append(f"{tag}: fused step used={fused}, want {want}")
    if FAILS:
        print("FAILED:", "; ".join(FAILS))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
