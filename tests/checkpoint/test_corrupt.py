"""Damaged model and checkpoint files, and bad predict input: each is one
clear error line (naming the file and what is wrong) and a non-zero exit,
never a crash. Also a seeded fuzz: random bytes flipped anywhere in a model
file never crash eval."""
import json
import os
import random
import shutil
import subprocess

import h5py
import numpy as np

import ckhelp as C
import idxgen
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
out = os.path.join(d, "out")
p = C.train(d, data, out, ["--epochs", "2", "--checkpoint-every", "1",
                           "--optimizer", "momentum", "--learning-rate", "0.002"])
T.check(p.returncode == 0, f"training failed: {p.stderr.strip()}")
model = os.path.join(out, "model", "model.h5")
ckpt = os.path.join(out, "checkpoints", "ckpt-epoch-2.h5")
ONE_ROW = '{"data": [' + ",".join(["0.5"] * 784) + ']}'


def damaged(src, name, fn):
    dst = os.path.join(d, name)
    shutil.copy(src, dst)
    fn(dst)
    return dst


def flip(path, offset, n=4):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(n)
        f.seek(offset)
        f.write(bytes(x ^ 0xFF for x in b))


def offset_of(path, name):
    with h5py.File(path, "r") as f:
        return f[name].id.get_offset()


def truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def h5edit(fn):
    def edit(path):
        with h5py.File(path, "r+") as f:
            fn(f)
    return edit


def reshaped(shape):
    def edit(f):
        del f["model_weights/dense_1/dense_1/kernel:0"]
        f["model_weights/dense_1/dense_1/kernel:0"] = np.ones(shape, np.float32)
    return edit


def tanh_config(f):
    f.attrs["model_config"] = f.attrs["model_config"].replace(b'"relu"', b'"tanh"', 1)


def check_fails(args, needle, what, stdin=None):
    q = T.run(args) if stdin is None else _run_stdin(args, stdin)
    T.check(C.one_error_line(q) and needle in q.stderr and q.returncode == 2,
            f"{what}: expected rc 2 and one error line with '{needle}', got rc {q.returncode}: "
            f"{q.stderr.strip()[-600:]}")


def _run_stdin(args, text):
    return subprocess.run([T.TFDIST] + args, input=text, capture_output=True, text=True, timeout=60)


kernel = "model_weights/dense_1/dense_1/kernel:0"
cases = [
    ("truncated", lambda p: truncate(p), "truncated or damaged"),
    ("flipped-weights", lambda p: flip(p, offset_of(p, kernel) + 64), "weights checksum mismatch"),
    ("missing-dataset", h5edit(lambda f: f.__delitem__("model_weights/dense_1/dense_1/bias:0")),
     "bias:0: dataset is missing"),
    ("wrong-units", h5edit(reshaped((64, 31))), "bias:0: shape (32,) does not match the kernel's 31"),
    ("wrong-inputs", h5edit(reshaped((63, 32))), "kernel:0: shape (63, 32), expected (64, "),
    ("no-layer-names", h5edit(lambda f: f["model_weights"].attrs.__delitem__("layer_names")),
     "attribute 'layer_names' is missing"),
    ("tanh", h5edit(tanh_config), "activation 'tanh' is not supported"),
    ("no-weights-group", h5edit(lambda f: f.__delitem__("model_weights")),
     "group 'model_weights' is missing"),
]
for src_tag, src in (("model", model), ("ckpt", ckpt)):
    for name, fn, needle in cases:
        path = damaged(src, f"{src_tag}-{name}.h5", fn)
        what = f"{src_tag} {name}"
        check_fails(["eval", "--model", path, "--data-folder", data], needle, what + " eval")
        check_fails(["predict", "--model", path], needle, what + " predict", stdin=ONE_ROW)
        if src_tag == "ckpt":
            q = C.train(d, data, os.path.join(d, "resume-out"),
                        ["--epochs", "3", "--optimizer", "momentum", "--learning-rate", "0.002",
                         "--resume-from", path])
            T.check(C.one_error_line(q) and needle in q.stderr and path in q.stderr,
                    f"{what} resume: {q.stderr.strip()[-600:]}")

# Checkpoint-only damage: the optimizer state.
path = damaged(ckpt, "ckpt-flipped-opt.h5", lambda p: flip(p, offset_of(p, "optimizer/state") + 4000))
q = C.train(d, data, os.path.join(d, "resume-out"), ["--epochs", "3", "--optimizer", "momentum",
                                                    "--learning-rate", "0.002", "--resume-from", path])
T.check(C.one_error_line(q) and "state checksum mismatch" in q.stderr, f"flipped opt: {q.stderr}")

# Not HDF5 at all, empty, a folder without model.h5.
text = os.path.join(d, "notes.h5")
open(text, "w").write("these are not weights\n")
empty = os.path.join(d, "empty.h5")
open(empty, "w").close()
for path, needle in ((text, "not an HDF5 file"), (empty, "not an HDF5 file"),
                     (os.path.join(d, "data"), "model.h5: No such file")):
    check_fails(["eval", "--model", path, "--data-folder", data], needle, path + " eval")
    check_fails(["predict", "--model", path], needle, path + " predict", stdin=ONE_ROW)
    q = C.train(d, data, os.path.join(d, "resume-out"), ["--epochs", "3", "--resume-from", path])
    T.check(C.one_error_line(q), f"{path} resume: {q.stderr.strip()}")
check_fails(["eval", "--data-folder", data], "--model: required", "eval without --model")

# Bad predict input, on stdin and from files.
row = lambda n: "[" + ",".join(["0.25"] * n) + "]"
json_cases = [
    ("not json", "stdin: not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"x": 1}', 'stdin: key "data": missing'),
    ('{"data": 5}', "stdin: data: expected an array"),
    ('{"data": []}', "stdin: data: no rows"),
    ('{"data": [' + row(783) + "]}", "stdin: data[0]: 783 values, expected 784"),
    ('{"data": [' + row(784) + "," + row(785) + "]}", "stdin: data[1]: 785 values, expected 784"),
    ('{"data": [5]}', "stdin: data[0]: not an array"),
    ('{"data": [' + row(784) + '], "data": [' + row(784) + "]}", 'stdin: duplicate key "data"'),
    ('{"data": [[' + ",".join(["1"] * 5 + ['"a"'] + ["1"] * 778) + "]]}", "stdin: data[0][5]: not a number"),
    ('{"data": [[' + ",".join(["1"] * 7 + ["1e300"] + ["1"] * 776) + "]]}", "stdin: data[0][7]: 1e+300 is outside"),
]
for text_in, needle in json_cases:
    check_fails(["predict", "--model", model], needle, f"predict {text_in[:30]!r}", stdin=text_in)
# Huge but valid inputs overflow the logits: the output stays valid JSON.
q = _run_stdin(["predict", "--model", model], '{"data": [[' + ",".join(["3e38"] * 784) + "]]}")
T.check(q.returncode == 0 and len(json.loads(q.stdout)["probabilities"][0]) == 10,
        f"huge inputs: rc {q.returncode} {q.stdout[:200]} {q.stderr.strip()}")
bad_json = os.path.join(d, "bad.json")
open(bad_json, "w").write('{"data": [[1, 2]]}')
check_fails(["predict", "--model", model, "--input", bad_json], bad_json + ": data[0]: 2 values",
            "predict file json")
rng = np.random.default_rng(0)
imgs = rng.integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
bad_magic = idxgen.write(os.path.join(d, "magic-idx3-ubyte"), idxgen.idx_images_bytes(imgs, 0x801), False)
check_fails(["predict", "--model", model, bad_magic], "magic 0x00000801", "idx magic")
small = idxgen.write(os.path.join(d, "small-idx3-ubyte"),
                     idxgen.idx_images_bytes(imgs[:, :10, :10].copy()), True)
check_fails(["predict", "--model", model, small], "of 10x10", "idx 10x10")
cut = os.path.join(d, "cut-idx3-ubyte")
open(cut, "wb").write(idxgen.idx_images_bytes(imgs)[:-7])
check_fails(["predict", "--model", model, "--input", cut], "truncated", "idx truncated")

# Seeded fuzz: flips anywhere never crash; a failure is still one error line.
size = os.path.getsize(model)
rnd = random.Random(7)
for i in range(40):
    path = damaged(model, "fuzz.h5", lambda p: flip(p, rnd.randrange(0, size - 4), rnd.randint(1, 4)))
    q = subprocess.run([T.TFDIST, "eval", "--model", path, "--data-folder", data, "--json"],
                       capture_output=True, timeout=60)
    q.stderr = q.stderr.decode("utf-8", "replace")  # a damaged name must not garble the line
    T.check("\ufffd" not in q.stderr, f"fuzz {i}: undecodable bytes in the error")
    T.check(q.returncode in (0, 2), f"fuzz {i}: rc {q.returncode}: {q.stderr.strip()[-400:]}")
    T.check(q.returncode == 0 or C.one_error_line(q), f"fuzz {i}: {q.stderr.strip()[-400:]}")
C.finish(d)
