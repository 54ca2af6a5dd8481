"""--keep-checkpoints: the exact files a run leaves in <outputs>/checkpoints
with the default (3), with 1 and with all; --resume-from auto resumes from
the newest kept one and goes on pruning; a link planted under an old
checkpoint name is not a checkpoint: it stays, never followed, its target
byte-identical; a checkpoint that cannot be deleted (chattr +i) is a warning
in the rank log naming the file and errno, and the run goes on; a later epoch
left by another run is not this run's to delete; a bad value is a one-line
error, exit 2."""
import json
import os
import subprocess

import ckhelp as C
import tfdtest as T

d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"))
EVERY = ["--checkpoint-every", "1"]


def kept(out):
    return sorted(os.listdir(os.path.join(out, "checkpoints")))


def names(*epochs):
    return sorted([f"ckpt-epoch-{e}.h5" for e in epochs] + ["latest"])


def latest(out):
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        return f.read()


# The default: the newest 3, `latest` naming the newest; run.json says 3.
dflt = os.path.join(d, "default")
p = C.train(d, data, dflt, EVERY + ["--epochs", "5"])
T.check(p.returncode == 0, f"default run: exit {p.returncode}: {p.stderr.strip()}")
T.check(kept(dflt) == names(3, 4, 5), f"default keeps {kept(dflt)}, expected epochs 3, 4, 5")
T.check(latest(dflt) == "ckpt-epoch-5.h5\n", f"default: latest is {latest(dflt)!r}")
with open(os.path.join(dflt, "run.json")) as f:
    T.check(json.load(f)["config"]["keep_checkpoints"] == 3, "run.json: keep_checkpoints not 3")

# Resumed from auto: from epoch 5, and still the newest 3 afterwards.
p = C.train(d, data, dflt, EVERY + ["--epochs", "7", "--resume-from", "auto"])
T.check(p.returncode == 0 and "ckpt-epoch-5.h5 at epoch 5" in p.stdout,
        f"auto after the default: exit {p.returncode}: {p.stdout[-300:]} {p.stderr.strip()}")
T.check(kept(dflt) == names(5, 6, 7), f"default after resume keeps {kept(dflt)}")

# N=1: only the newest, with a link planted under an old name: not ours, so
# neither counted nor followed; it stays, and its target is byte-identical.
one = os.path.join(d, "one")
os.makedirs(os.path.join(one, "checkpoints"))
target = os.path.join(d, "precious.h5")
TARGET_TEXT = b"not a checkpoint, not tfdist's to delete\n"
with open(target, "wb") as f:
    f.write(TARGET_TEXT)
link = os.path.join(one, "checkpoints", "ckpt-epoch-0.h5")
os.symlink(target, link)


def link_intact():
    return (os.path.islink(link) and os.readlink(link) == target and
            open(target, "rb").read() == TARGET_TEXT)


p = C.train(d, data, one, EVERY + ["--epochs", "3", "--keep-checkpoints", "1"])
T.check(p.returncode == 0, f"keep 1: exit {p.returncode}: {p.stderr.strip()}")
T.check(kept(one) == sorted(names(3) + ["ckpt-epoch-0.h5"]),
        f"keep 1 keeps {kept(one)}, expected epoch 3 and the planted link")
T.check(link_intact(), "keep 1: the planted link or its target was touched")
p = C.train(d, data, one, EVERY + ["--epochs", "4", "--keep-checkpoints", "1", "--resume-from",
                                   "auto"])
T.check(p.returncode == 0 and "ckpt-epoch-3.h5 at epoch 3" in p.stdout and
        kept(one) == sorted(names(4) + ["ckpt-epoch-0.h5"]) and link_intact(),
        f"keep 1, auto: exit {p.returncode}, kept {kept(one)}: {p.stderr.strip()}")

# An undeletable old checkpoint (immutable: root cannot delete it either): a
# warning in rank 0's log naming it and the errno; the run goes on.
stuck = os.path.join(one, "checkpoints", "ckpt-epoch-4.h5")
if subprocess.run(["chattr", "+i", stuck], capture_output=True).returncode != 0:
    print("skipped the undeletable case: chattr +i is not allowed here")
else:
    try:
        p = C.train(d, data, one, EVERY + ["--epochs", "5", "--keep-checkpoints", "1",
                                           "--resume-from", "auto"])
    finally:
        subprocess.run(["chattr", "-i", stuck])
    with open(os.path.join(d, "logs", "rank-0.log")) as f:
        log = f.read()
    want = (f"warning: --keep-checkpoints: could not delete {stuck}: Operation not permitted "
            "(errno 1); the run goes on")
    T.check(p.returncode == 0 and want in log and kept(one) == sorted(names(4, 5) +
                                                                      ["ckpt-epoch-0.h5"]),
            f"undeletable epoch 4: exit {p.returncode}, kept {kept(one)}, warning in the log: "
            f"{want in log}: {p.stderr.strip()}")

# A resume from an older file: the later epochs there are another run's.
p = C.train(d, data, dflt, EVERY + ["--epochs", "6", "--keep-checkpoints", "1", "--resume-from",
                                    os.path.join(dflt, "checkpoints", "ckpt-epoch-5.h5")])
T.check(p.returncode == 0 and kept(dflt) == names(6, 7) and latest(dflt) == "ckpt-epoch-6.h5\n",
        f"resume from 5 with keep 1: exit {p.returncode}, kept {kept(dflt)}, latest "
        f"{latest(dflt)!r}: {p.stderr.strip()}")

# all (and 0): every one.
for word in ("all", "0"):
    out = os.path.join(d, "all-" + word)
    p = C.train(d, data, out, EVERY + ["--epochs", "5", "--keep-checkpoints", word])
    T.check(p.returncode == 0 and kept(out) == names(1, 2, 3, 4, 5),
            f"keep {word}: exit {p.returncode}, kept {kept(out)}: {p.stderr.strip()}")

# A bad value: one line naming the flag, exit 2, before anything is written.
for bad in ("-1", "some", "1.5"):
    out = os.path.join(d, "bad")
    p = C.train(d, data, out, ["--keep-checkpoints", bad])
    T.check(p.returncode == 2 and C.one_error_line(p) and "--keep-checkpoints" in p.stderr
            and not os.path.exists(out), f"--keep-checkpoints {bad}: exit {p.returncode}: "
            f"{p.stderr.strip()}")

C.finish(d)
