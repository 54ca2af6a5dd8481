"""Interop: model.h5 read with h5py and numpy alone (the Keras layout of
../shared/SPEC.md: attributes, layer and weight names, shapes, softmax
config), its forward pass computed independently in float64, gives the same
classes as `tfdist predict` on 1,000 test images and probabilities within
1e-5; JSON input gives the same answer as idx input; eval's per-class counts
agree with the independent predictions."""
import json
import os
import subprocess

import h5py
import numpy as np

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"), n_train=600, n_test=1000)
out = os.path.join(d, "out")
p = C.train(d, data, out, ["--epochs", "3", "--first-layer-neurons", "48"])
T.check(p.returncode == 0, f"training failed: {p.stderr.strip()}")
model = os.path.join(out, "model", "model.h5")

# The file as Keras loaders read it.
with h5py.File(model, "r") as f:
    for key in ("model_config", "keras_version", "backend"):
        a = f.attrs.get_id(key)
        T.check(a.shape == () and a.get_type().get_class() == h5py.h5t.STRING and
                not a.get_type().is_variable_str(), f"root attribute {key}: not a fixed-length scalar string")
    T.check("training_config" not in f.attrs, "training_config present")
    cfg = json.loads(f.attrs["model_config"])
    layers = cfg["config"]["layers"]
    T.check(cfg["class_name"] == "Sequential" and layers[0]["class_name"] == "InputLayer" and
            layers[0]["config"]["batch_input_shape"] == [None, 784], "model_config input layer")
    T.check("batch_shape" not in layers[0]["config"] and "module" not in layers[1] and
            "registered_name" not in layers[1], "model_config has keys tf-keras 2.x rejects")
    dense = [l["config"] for l in layers[1:]]
    T.check([l["units"] for l in dense] == [48, 32, 10] and
            [l["activation"] for l in dense] == ["relu", "relu", "softmax"], f"dense config {dense}")
    g = f["model_weights"]
    names = [n.decode() for n in g.attrs["layer_names"]]
    T.check(names == ["dense", "dense_1", "dense_2"], f"layer_names {names}")
    W, B = [], []
    for n, (fan_in, units) in zip(names, ((784, 48), (48, 32), (32, 10))):
        wn = [w.decode() for w in g[n].attrs["weight_names"]]
        T.check(wn == [f"{n}/kernel:0", f"{n}/bias:0"], f"weight_names {wn}")
        k, b = g[n][wn[0]], g[n][wn[1]]
        T.check(k.shape == (fan_in, units) and b.shape == (units,) and k.dtype == np.dtype("<f4"),
                f"{n}: shapes {k.shape} {b.shape} {k.dtype}")
        T.check(k.chunks is None and k.compression is None, f"{n}: kernel not plain contiguous")
        W.append(np.array(k, np.float64))
        B.append(np.array(b, np.float64))

# Independent forward pass in float64 from the raw idx bytes.
import gzip
raw = gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz"), "rb").read()
labels = np.frombuffer(gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz"), "rb").read()[8:], np.uint8)
x = np.frombuffer(raw[16:], np.uint8).reshape(-1, 784).astype(np.float64) / 255.0
h = np.maximum(x @ W[0] + B[0], 0)
h = np.maximum(h @ W[1] + B[1], 0)
z = h @ W[2] + B[2]
ref = np.exp(z - z.max(axis=1, keepdims=True))
ref /= ref.sum(axis=1, keepdims=True)
ref_cls = z.argmax(axis=1)
T.check(len(ref_cls) == 1000, "1000 test images")

p = T.run(["predict", "--model", os.path.join(out, "model"), os.path.join(data, "t10k-images-idx3-ubyte.gz")])
T.check(p.returncode == 0, f"predict failed: {p.stderr.strip()}")
got = json.loads(p.stdout)
cls, prob = np.array(got["classes"]), np.array(got["probabilities"])
T.check(prob.shape == (1000, 10), f"probabilities shape {prob.shape}")
T.check(np.array_equal(cls, ref_cls), f"classes differ at {np.flatnonzero(cls != ref_cls)[:10]}")
err = np.abs(prob - ref).max()
print(f"max |p - p_ref| = {err:.3g}")
T.check(err <= 1e-5, f"probabilities differ by {err:.3g} > 1e-5")
T.check(np.allclose(prob.sum(axis=1), 1, atol=1e-5), "probabilities do not sum to 1")

# The same rows as JSON on stdin (the scoring format) give the same answer
# (scaled as tfdist scales pixels: times the float32 reciprocal of 255).
rows = (np.frombuffer(raw[16:], np.uint8).reshape(-1, 784)[:50].astype(np.float32) *
        (np.float32(1) / np.float32(255))).tolist()
q = subprocess.run([T.TFDIST, "predict", "--model", model], input=json.dumps({"data": rows}),
                   capture_output=True, text=True, timeout=60)
T.check(q.returncode == 0, f"json predict failed: {q.stderr.strip()}")
if q.returncode == 0:
    j = json.loads(q.stdout)
    # Same classes; probabilities within float32 rounding, not bit for bit:
    # a row's GEMM result depends on where it falls in the BLAS's tiles
    # (50 rows against 1000; OpenBLAS's Haswell kernels differ in the last bit).
    dj = np.abs(np.array(j["probabilities"]) - prob[:50]).max()
    T.check(j["classes"] == got["classes"][:50] and dj <= 1e-6,
            f"JSON input and idx input disagree (max |dp| {dj:.3g})")

# eval's confusion matrix is the independent predictions tallied.
p = T.run(["eval", "--model", model, "--data-folder", data, "--json"])
ev = json.loads(p.stdout)
cm = np.zeros((10, 10), int)
np.add.at(cm, (labels, ref_cls), 1)
T.check(ev["confusion_matrix"] == cm.tolist(), "confusion matrix differs from the independent one")
T.check(ev["accuracy"] == T.metric(out, "final_acc")[-1], "eval accuracy != final_acc")
C.finish(d)
