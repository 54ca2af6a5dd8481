"""Plain `tfdist train` runs start no MPI (a world of one), so side by side
they leave nothing of Open MPI's in $TMPDIR. MPI programs run without a
launcher (the tests and benchmarks, here test_allreduce: argv[1]) are still
Open MPI singletons: side by side each keeps Open MPI's session tree under
its own base in $TMPDIR, never the shared ompi.<host>.<uid>/jf.0 that one
finishing run could remove under another's MPI_Init. The base is gone after
the run; bases left by dead runs are swept, live or foreign ones kept, and a
user's own OMPI_MCA_orte_tmpdir_base is honoured."""
import os
import re
import subprocess
import sys
import time

import numpy as np

import idxgen
import tfdtest as T

SINGLETON = [os.path.abspath(sys.argv[1]), "ring"]

d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(3), 1500, 300, gz=False)
tmp = os.path.join(d, "tmp")
os.makedirs(tmp)

dead = subprocess.Popen(["true"])
dead.wait()
stale = os.path.join(tmp, f"tfdist-mpi.{dead.pid}.AbCd12")
os.makedirs(os.path.join(stale, "ompi.x.0", "jf.0"))
open(os.path.join(stale, "ompi.x.0", "jf.0", "f"), "w").close()
keep = [f"tfdist-mpi.{os.getpid()}.LiVe99", "tfdist-mpi.notapid", f"mine.{dead.pid}.x"]
for k in keep:
    os.makedirs(os.path.join(tmp, k))

env = dict(os.environ, TMPDIR=tmp)
env.pop("OMPI_MCA_orte_tmpdir_base", None)


def watch(procs):
    """Polls $TMPDIR while procs run: pid -> session bases seen, stray ompi.* trees."""
    seen, stray = {}, set()
    while any(p.poll() is None for p in procs):
        for name in os.listdir(tmp):
            m = re.fullmatch(r"tfdist-mpi\.(\d+)\.\w{6}", name)
            if name.startswith("ompi."):
                stray.add(name)
            if not m or name in keep:
                continue
            try:
                if any(s.startswith("ompi.") for s in os.listdir(os.path.join(tmp, name))):
                    seen.setdefault(int(m.group(1)), set()).add(name)
            except FileNotFoundError:
                pass
        time.sleep(0.002)
    return seen, stray


# Plain training runs: no MPI, so no session tree of any kind.
procs = []
for k in range(4):
    cmd = [T.TFDIST, "train", "--data-folder", data, "--epochs", "3", "--batch-size", "25",
           "--seed", str(k + 1), "--outputs", os.path.join(d, f"out{k}"),
           "--logs", os.path.join(d, f"logs{k}")]  # runs at once may not share logs (issue 18)
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
seen, stray = watch(procs)
for k, p in enumerate(procs):
    out, err = p.communicate()
    T.check(p.returncode == 0, f"run {k} exited {p.returncode}: {err.strip()[-400:]}")
    T.check(p.pid not in seen, f"run {k} (pid {p.pid}) started MPI: {sorted(seen.get(p.pid, ()))}")
T.check(not stray, f"a session tree in the shared base: {sorted(stray)}")
for k in range(4):
    w = T.weights(os.path.join(d, f"out{k}", "model", "model.h5"))
    T.check(float(np.std(w[0])) > 0.01, f"run {k}: first kernel is degenerate")
T.check(os.path.isdir(stale), "a plain run (no MPI) swept the stale base")

# MPI singletons: each its own session base, the stale one swept.
procs = [subprocess.Popen(SINGLETON, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) for _ in range(4)]
seen, stray = watch(procs)
for k, p in enumerate(procs):
    out, err = p.communicate()
    T.check(p.returncode == 0, f"singleton {k} exited {p.returncode}: {err.strip()[-400:]}")
    T.check(len(seen.get(p.pid, ())) == 1,
            f"singleton {k} (pid {p.pid}): session bases seen {sorted(seen.get(p.pid, ()))}")
T.check(not stray, f"a session tree in the shared base: {sorted(stray)}")
T.check(sorted(os.listdir(tmp)) == sorted(keep),
        f"$TMPDIR after the runs holds {sorted(os.listdir(tmp))}, want {sorted(keep)}")

# A base the user chose: tfdist makes none of its own, and Open MPI's tree
# under it is cleaned by Open MPI.
user_base = os.path.join(d, "userbase")
os.makedirs(user_base)
p = subprocess.run(SINGLETON, env=dict(env, OMPI_MCA_orte_tmpdir_base=user_base),
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
T.check(p.returncode == 0, f"user-base run failed: {p.stderr.strip()[-400:]}")
T.check(sorted(os.listdir(tmp)) == sorted(keep),
        f"user-base run touched $TMPDIR: {sorted(os.listdir(tmp))}")
T.check(os.listdir(user_base) == [], f"user base not cleaned: {os.listdir(user_base)}")
T.done()
