"""Exact resume in --data-mode stream: 4 epochs straight and 2 epochs then a
resume to 4 give bit-identical weights; resuming on other shards is refused,
naming the data (the fingerprint is the shard index's body CRCs)."""
import os
import shutil

import numpy as np

import tfdtest as T

d = T.tmpdir()
syn, sh = os.path.join(d, "syn"), os.path.join(d, "sh")
for args in (["data", "synth", "--count", "2000", "--out", syn],
             ["data", "shard", "--shards", "3", "--out", sh, syn]):
    p = T.run(args)
    T.check(p.returncode == 0, f"{args[1]} failed: {p.stderr.strip()}")
base = ["train", "--data-folder", sh, "--data-mode", "stream", "--batch-size", "32",
        "--shuffle-buffer", "300", "--checkpoint-every", "2", "--progress", "off"]


def train(out, epochs, *extra):
    return T.run(base + ["--epochs", str(epochs), "--outputs", os.path.join(d, out),
                         "--logs", os.path.join(d, "logs")] + list(extra))


for p in (train("a", 4), train("b", 2), train("b", 4, "--resume-from", "latest")):
    T.check(p.returncode == 0, f"train failed: {p.stderr.strip()}")
wa = T.weights(os.path.join(d, "a", "model", "model.h5"))
wb = T.weights(os.path.join(d, "b", "model", "model.h5"))
T.check(all(np.array_equal(x, y) for x, y in zip(wa, wb)), "stream resume is not bit-identical")
# b's log keeps the first run's final_acc (epoch 2) before the resumed one.
T.check(T.metric(os.path.join(d, "a"), "final_acc")[-1] == T.metric(os.path.join(d, "b"), "final_acc")[-1],
        "final_acc differs after resume")

# Other data under the same layout: a shard's body changes, so its CRC does.
other = os.path.join(d, "syn2")
T.run(["data", "synth", "--count", "2000", "--seed", "99", "--out", other])
shutil.rmtree(sh)
T.run(["data", "shard", "--shards", "3", "--out", sh, other])
ckpt = os.path.join(d, "a", "checkpoints", "ckpt-epoch-2.h5")
p = train("c", 4, "--resume-from", ckpt)
err = p.stderr.strip()
T.check(p.returncode != 0 and err.count("\n") == 0 and "data" in err,
        f"resume on other shards: rc {p.returncode}, {err!r}")
T.done()
