"""tfdist data synth/verify/inspect/shard against numpy oracles, and
tfdist train --data-mode stream end to end: learns, is deterministic, runs
on 2 ranks with uneven shards, and stops every rank with one clear line on a
corrupt shard."""
import gzip
import os
import re
import shutil
import struct
import zlib

import numpy as np

import tfdtest as T

d = T.tmpdir()
N = 3000


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic, count = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data[16:], np.uint8).reshape(count, rows * cols)
    return np.frombuffer(data[8:], np.uint8)


def data_cmd(*args, ok=True):
    p = T.run(["data"] + [str(a) for a in args])
    if ok:
        T.check(p.returncode == 0, f"data {args}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def expect_error(label, args, *needles):
    p = T.run([str(a) for a in args], timeout=120)
    err = p.stderr.strip()
    T.check(p.returncode == 2, f"{label}: exit {p.returncode}, want 2")
    T.check(err.startswith("tfdist: error:") and "\n" not in err, f"{label}: not one line: {err!r}")
    for n in needles:
        T.check(n in err, f"{label}: {n!r} not in {err!r}")


# synth: deterministic, seeded, learnable labels
syn, syn2, syn3 = (os.path.join(d, s) for s in ("syn", "syn2", "syn3"))
data_cmd("synth", "--count", N, "--out", syn, "--seed", 4)
data_cmd("synth", "--count", N, "--out", syn2, "--seed", 4)
data_cmd("synth", "--count", N, "--out", syn3, "--seed", 5, "--gzip")
names = sorted(os.listdir(syn))
T.check(names == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                  "train-labels-idx1-ubyte"], f"synth wrote {names}")
for n in names:
    T.check(open(os.path.join(syn, n), "rb").read() == open(os.path.join(syn2, n), "rb").read(),
            f"synth is not deterministic: {n}")
x, y = read_idx(os.path.join(syn, names[2])), read_idx(os.path.join(syn, names[3]))
x3 = read_idx(os.path.join(syn3, names[2] + ".gz"))
T.check(x.shape == (N, 784) and len(y) == N and y.max() <= 9, f"synth shapes {x.shape} {len(y)}")
T.check(not np.array_equal(x, x3), "another seed gave the same images")
T.check(np.bincount(y, minlength=10).min() > N / 20, "synth labels are not spread over 10 classes")

# verify
p = data_cmd("verify", syn)
T.check("ok: 2 checked, 0 failed" in p.stdout, f"verify: {p.stdout}")

# inspect: histogram, label of the sample, the picture's pixels
png, pgm = os.path.join(d, "s.png"), os.path.join(d, "s.pgm")
p = data_cmd("inspect", os.path.join(syn, names[2]), "--sample", 5, "--out", png)
T.check(f"dims:    {N} x 28 x 28" in p.stdout, "inspect: no dims line")
hist = [int(m) for m in re.findall(r"^\s+\d\s+(\d+)\s+[\d.]+%$", p.stdout, re.M)]
T.check(hist == list(np.bincount(y, minlength=10)), f"inspect histogram {hist}")
T.check(f"sample 5: label {y[5]}" in p.stdout, "inspect: wrong label for sample 5")
blob = open(png, "rb").read()
T.check(blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
idat = blob[blob.index(b"IDAT") + 4:blob.index(b"IEND") - 8]
rows = zlib.decompress(idat)
T.check(rows[::29] == b"\0" * 28, "PNG rows must use filter 0")
T.check(bytes(b for i, b in enumerate(rows) if i % 29) == x[5].tobytes(), "PNG pixels differ")
data_cmd("inspect", os.path.join(syn, names[2]), "--sample", 7, "--out", pgm)
T.check(open(pgm, "rb").read() == b"P5\n28 28\n255\n" + x[7].tobytes(), "PGM differs")
# --scale 3: each pixel a 3x3 block
p = data_cmd("inspect", os.path.join(syn, names[2]), "--sample", 7, "--out", pgm, "--scale", 3)
big = x[7].reshape(28, 28).repeat(3, axis=0).repeat(3, axis=1)
T.check(open(pgm, "rb").read() == b"P5\n84 84\n255\n" + big.tobytes() and "(84x84)" in p.stdout,
        "--scale 3: PGM differs")
p = data_cmd("inspect", os.path.join(syn3, names[3] + ".gz"))
T.check("format:  gzip" in p.stdout and "labels" in p.stdout, "inspect labels.gz")

# shard: pieces join back into the source; index, t10k copy, gzip shards
for gz, k in ((False, 5), (True, 3)):
    sh = os.path.join(d, f"sh{k}")
    args = ["shard", "--shards", k, "--out", sh, syn] + (["--gzip"] if gz else [])
    data_cmd(*args)
    files = sorted(os.listdir(sh))
    T.check("train-shards.index" in files and "t10k-images-idx3-ubyte" in files, f"shard: {files}")
    suffix = ".gz" if gz else ""
    imgs = [read_idx(os.path.join(sh, f"train-images-idx3-ubyte-{i:05d}-of-{k:05d}{suffix}"))
            for i in range(k)]
    labs = [read_idx(os.path.join(sh, f"train-labels-idx1-ubyte-{i:05d}-of-{k:05d}{suffix}"))
            for i in range(k)]
    T.check(np.array_equal(np.concatenate(imgs), x) and np.array_equal(np.concatenate(labs), y),
            f"{k} shards do not join into the source")
    T.check(max(len(a) for a in labs) - min(len(a) for a in labs) <= 1, "shards are not balanced")
    p = data_cmd("verify", sh)
    T.check("ok    shards" in p.stdout and "0 failed" in p.stdout, f"verify shards: {p.stdout}")
only = os.path.join(d, "only")
data_cmd("shard", "--shards", 2, "--out", only, "--images", os.path.join(syn, names[2]),
         "--labels", os.path.join(syn, names[3]))
T.check(len(os.listdir(only)) == 5, f"--images/--labels: {os.listdir(only)}")

# bad input: one line, exit 2
bad = os.path.join(d, "bad")
data_cmd("synth", "--count", 500, "--out", bad, "--gzip")
target = os.path.join(bad, "train-images-idx3-ubyte.gz")
blob = bytearray(open(target, "rb").read())
blob[-8] ^= 0xff
open(target, "wb").write(blob)
expect_error("verify bad CRC", ["data", "verify", bad], target, "incorrect data check")
expect_error("inspect missing", ["data", "inspect", os.path.join(d, "nope")], "No such file")
fifo = os.path.join(d, "fifo-idx3-ubyte")  # would block open() forever without O_NONBLOCK
os.mkfifo(fifo)
expect_error("inspect a FIFO", ["data", "inspect", fifo], fifo, "not a regular file")
expect_error("inspect sample range", ["data", "inspect", os.path.join(syn, names[2]), "--sample",
                                      N], "--sample")
expect_error("shard 0", ["data", "shard", "--shards", 0, "--out", bad, syn], "--shards")
expect_error("shard too many", ["data", "shard", "--shards", N + 1, "--out", bad, syn], "--shards")
expect_error("shard no source", ["data", "shard", "--shards", 2, "--out", bad], "SRC_DIR")
expect_error("synth no count", ["data", "synth", "--out", bad], "--count")
expect_error("unknown subcommand", ["data", "bogus"], "bogus")
expect_error("unknown flag", ["data", "verify", syn, "--bogus"], "--bogus")

# training in stream mode: learns, same weights twice, 2 ranks with 3+2 shards
sh5 = os.path.join(d, "sh5")
base = ["train", "--data-folder", sh5, "--data-mode", "stream", "--epochs", "2",
        "--batch-size", "32", "--learning-rate", "0.1", "--shuffle-buffer", "500",
        "--logs", os.path.join(d, "logs")]
# Open MPI's own allocations at exit read as leaks under LeakSanitizer (the
# sanitizer build); the loader's memory is leak-checked by the unit tests.
mpi_env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"}
outs = []
for k in range(2):
    out = os.path.join(d, f"out{k}")
    p = T.run(base + ["--outputs", out], env=mpi_env)
    T.check(p.returncode == 0, f"stream train {k}: {p.stderr.strip()}")
    outs.append(out)
waits = T.metric(outs[0], "data_wait_s")
T.check(len(waits) == 2 and all(0 <= w < 5 for w in waits), f"data_wait_s {waits}")
T.check(T.metric(outs[0], "validation_acc")[-1] > 0.7, "stream mode did not learn")
w0, w1 = (T.weights(os.path.join(o, "model", "model.h5")) for o in outs)
T.check(all(np.array_equal(a, b) for a, b in zip(w0, w1)), "stream mode is not deterministic")
out2 = os.path.join(d, "out-np2")
p = T.run(base + ["--outputs", out2], mpi=2, timeout=120, env=mpi_env)
T.check(p.returncode == 0, f"stream train -np 2: {p.stderr.strip()[-400:]}")
steps = T.metrics(out2)[-1]["step"]
T.check(steps == 2 * (1200 // 32), f"-np 2: {steps} steps; rank 1 holds 1200 samples, 37 steps")

# a corrupt shard stops every rank, with one line naming it
victim = os.path.join(sh5, "train-images-idx3-ubyte-00001-of-00005")
blob = bytearray(open(victim, "rb").read())
blob[16 + 784 * 10] ^= 0x40
open(victim, "wb").write(blob)
p = T.run(base + ["--outputs", os.path.join(d, "out-bad")], mpi=2, timeout=120, env=mpi_env)
T.check(p.returncode != 0, "a corrupt shard trained to the end")
T.check(victim in p.stderr and "CRC-32" in p.stderr, f"corrupt shard: {p.stderr.strip()[-400:]}")
p = T.run(base + ["--outputs", os.path.join(d, "out-bad2"), "--data-folder", syn], mpi=2,
          timeout=120, env=mpi_env)
T.check(p.returncode != 0 and "each rank needs one" in p.stderr, "2 ranks on 1 shard")
if not T.failures:
    shutil.rmtree(d)  # kept for a look when something failed
T.done()
