"""tfdist model export --format onnx, read back by the onnx package and run
by ONNX Runtime (from a venv, tests/show/showenv.py): check_model passes (full
check, with shape inference), the graph's input is float [batch, 784] and
its output [batch, 10]; the initializers equal the model.h5 weights as h5py
reads them, bit for bit; on 1,000 test images ONNX Runtime gives the classes
`tfdist predict` gives and probabilities within 1e-5 (a trained 784-300-100-10
model and the checkpoint of a 784-50-20-10 run, whose file holds logits);
`--model NAME:VERSION` from the registry writes the same bytes. Bad input (a
corrupt or non-model file, an unknown --format, an unwritable --out, a disk
that fills mid-write) is a one-line error with a non-zero exit and leaves
nothing behind; --out through a link replaces the link, never its target."""
import gzip
import hashlib
import json
import os
import resource
import signal
import subprocess

import showenv

showenv.reexec(["onnx", "onnxruntime", "numpy", "h5py"])

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import idxgen  # noqa: E402
import tfdtest as T  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
d = T.tmpdir()
if os.path.exists(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")):
    data = FASHION
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:1000]
else:  # synthetic, learnable
    data = os.path.join(d, "data")
    idxgen.write_set(data, np.random.default_rng(8), 2000, 1000, gz=False, nested="")
    raw = open(os.path.join(data, "t10k-images-idx3-ubyte"), "rb").read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:1000]
test_idx = os.path.join(d, "test1000-idx3-ubyte")
with open(test_idx, "wb") as f:
    f.write(idxgen.idx_images_bytes(images))
x = (images.reshape(-1, 784).astype(np.float32) / np.float32(255.0))


def train(tag, extra):
    out = os.path.join(d, tag)
    p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs",
               os.path.join(d, tag + "-logs"), "--epochs", "1", "--max-steps", "300",
               "--progress", "off"] + extra, timeout=300)
    T.check(p.returncode == 0, f"{tag}: train exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return out


def export(model, out, extra=()):
    return T.run(["model", "export", "--format", "onnx", "--model", model, "--out", out] +
                 list(extra))


def check_against_predict(what, model, onnx_path, dims):
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)
    T.check(m.ir_version == 8 and [(o.domain, o.version) for o in m.opset_import] == [("", 13)],
            f"{what}: ir {m.ir_version} opset {m.opset_import}")
    (inp,), (outp,) = m.graph.input, m.graph.output

    def shape(v):
        return [dm.dim_param or dm.dim_value for dm in v.type.tensor_type.shape.dim]
    T.check(inp.name == "input" and shape(inp) == ["batch", 784] and
            inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, f"{what}: input {inp}")
    T.check(outp.name == "probabilities" and shape(outp) == ["batch", 10], f"{what}: output {outp}")
    T.check([n.op_type for n in m.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"],
            f"{what}: ops {[n.op_type for n in m.graph.node]}")
    inits = [numpy_helper.to_array(t) for t in m.graph.initializer]
    h5 = T.weights(model)
    T.check(len(inits) == 6 and all(a.dtype == np.float32 and a.shape == b.shape and
                                    np.array_equal(a, b) for a, b in zip(inits, h5)),
            f"{what}: initializers differ from model.h5's weights")
    T.check([a.shape for a in inits[0::2]] == [(784, dims[0]), (dims[0], dims[1]), (dims[1], 10)],
            f"{what}: kernel shapes {[a.shape for a in inits[0::2]]}")
    p = T.run(["predict", "--model", model, "--input", test_idx])
    T.check(p.returncode == 0, f"{what}: predict: {p.stderr.strip()}")
    want = json.loads(p.stdout)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {"input": x})[0]
    classes = probs.argmax(axis=1)
    wp = np.array(want["probabilities"], dtype=np.float64)
    T.check(probs.shape == (1000, 10) and wp.shape == (1000, 10), f"{what}: shapes")
    dp = float(np.abs(probs - wp).max())
    same = int((classes == np.array(want["classes"])).sum())
    print(f"{what}: {same}/1000 classes as tfdist predict, max |dp| {dp:.3g}")
    T.check(same == 1000, f"{what}: {1000 - same} classes differ from tfdist predict")
    T.check(dp <= 1e-5, f"{what}: max |dp| {dp:.3g} > 1e-5")
    T.check(len(set(want["classes"])) > 3, f"{what}: predicts {set(want['classes'])} only")
    # a batch of another size: the batch dimension is symbolic
    T.check(sess.run(None, {"input": x[:7]})[0].shape == (7, 10), f"{what}: batch of 7")


def leftovers(folder):
    return sorted(f for f in os.listdir(folder) if ".tmp." in f)


out1 = train("full", [])
model1 = os.path.join(out1, "model", "model.h5")
onnx1 = os.path.join(d, "model.onnx")
p = export(model1, onnx1)
T.check(p.returncode == 0 and p.stdout.strip().endswith("784-300-100-10)"),
        f"export: exit {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}")
if p.returncode == 0:
    print(f"model.onnx: {os.path.getsize(onnx1)} bytes; model.h5: {os.path.getsize(model1)} bytes")
    check_against_predict("784-300-100-10 model", model1, onnx1, (300, 100))

out2 = train("small", ["--first-layer-neurons", "50", "--second-layer-neurons", "20",
                       "--checkpoint-every", "1"])
ckpt = os.path.join(out2, "checkpoints", "ckpt-epoch-1.h5")
onnx2 = os.path.join(d, "ckpt.onnx")
p = export(ckpt, onnx2)
T.check(p.returncode == 0, f"export checkpoint: {p.stderr.strip()}")
if p.returncode == 0:
    check_against_predict("784-50-20-10 checkpoint", ckpt, onnx2, (50, 20))

# From the registry: the same bytes as from the file.
reg = os.path.join(d, "registry")
p = T.run(["model", "register", "--registry", reg, "--name", "fm", "--path",
           os.path.join(out1, "model")])
T.check(p.returncode == 0 and p.stdout.strip() == "fm:1", f"register: {p.stdout} {p.stderr}")
onnx3 = os.path.join(d, "reg.onnx")
p = export("fm:1", onnx3, ["--registry", reg])
T.check(p.returncode == 0, f"export fm:1: {p.stderr.strip()}")
T.check(os.path.exists(onnx3) and open(onnx3, "rb").read() == open(onnx1, "rb").read(),
        "export fm:1: not the bytes the file export wrote")


def refused(what, args, out, code=None, env_limit=None):
    """A one-line error, a non-zero exit (code if given), nothing at out, no temp files."""
    cmd = [T.TFDIST, "model", "export"] + args

    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (env_limit, env_limit))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       preexec_fn=cap if env_limit else None)
    lines = p.stderr.strip().splitlines()
    T.check(p.returncode != 0 and (code is None or p.returncode == code),
            f"{what}: exit {p.returncode}")
    T.check(len(lines) == 1 and lines[0].startswith("tfdist: error: "),
            f"{what}: stderr {p.stderr.strip()!r}")
    folder = os.path.dirname(out)
    if os.path.isdir(folder):
        T.check(leftovers(folder) == [], f"{what}: left {leftovers(folder)}")
    print(f"{what}: exit {p.returncode}: {lines[0] if lines else ''}")
    return p


bad = os.path.join(d, "bad")
os.makedirs(bad)
target = os.path.join(bad, "out.onnx")
corrupt = os.path.join(bad, "corrupt.h5")
blob = bytearray(open(model1, "rb").read())
blob[len(blob) // 2: len(blob) // 2 + 4096] = os.urandom(4096)  # inside the weights
open(corrupt, "wb").write(bytes(blob))
truncated = os.path.join(bad, "truncated.h5")
open(truncated, "wb").write(bytes(blob[:len(blob) // 3]))
text = os.path.join(bad, "notes.txt")
open(text, "w").write("not a model\n")
for what, model in (("corrupt weights", corrupt), ("truncated file", truncated),
                    ("a text file", text), ("an idx file", test_idx),
                    ("a missing registry entry", "nosuch:3")):
    refused(what, ["--format", "onnx", "--model", model, "--out", target, "--registry", reg],
            target)
    T.check(not os.path.exists(target), f"{what}: {target} was written")
refused("unknown --format", ["--format", "tflite", "--model", model1, "--out", target], target, 2)
refused("no --format", ["--model", model1, "--out", target], target, 2)
refused("no --out", ["--format", "onnx", "--model", model1], target, 2)
T.check(not os.path.exists(target), "a refused export wrote --out")
for what, out in (("--out in a missing folder", os.path.join(bad, "nodir", "m.onnx")),
                  ("--out under a file", os.path.join(text, "m.onnx"))):
    refused(what, ["--format", "onnx", "--model", model1, "--out", out], out)
# --out an existing folder: refused, the folder untouched
folder_out = os.path.join(bad, "afolder")
os.makedirs(folder_out)
refused("--out a folder", ["--format", "onnx", "--model", model1, "--out", folder_out],
        os.path.join(folder_out, "x"))
T.check(os.listdir(folder_out) == [] and leftovers(bad) == [], "--out a folder: left files")
# A disk that fills mid-write (a file-size limit): the old file stays whole.
open(target, "wb").write(b"old contents")
refused("a full disk", ["--format", "onnx", "--model", model1, "--out", target], target,
        env_limit=300000)
T.check(open(target, "rb").read() == b"old contents", "full disk: the old --out was touched")
# --out a link: the link is replaced by the new file, its target never written
victim = os.path.join(bad, "victim.txt")
open(victim, "w").write("keep me\n")
link = os.path.join(bad, "link.onnx")
os.symlink(victim, link)
p = export(model1, link)
T.check(p.returncode == 0 and not os.path.islink(link) and
        open(link, "rb").read() == open(onnx1, "rb").read() and
        open(victim).read() == "keep me\n", f"--out a link: {p.stderr.strip()}")
T.done()
