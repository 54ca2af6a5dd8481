"""The benchmark plots: `allreduce -j` writes JSON whose rows match the
table it prints (every algorithm, no wrong element), plot_allreduce.py turns
it into a PNG beside it, and plot_scaling.py draws a scaling.py --json
document (here a small made-up one, with scaling.py's model); a file that is
not theirs is a one-line error. Skipped (77) without matplotlib."""
import importlib.util
import json
import os
import struct
import subprocess
import sys

import tfdtest as T

if importlib.util.find_spec("matplotlib") is None:
    print("SKIP: no matplotlib (Debian: python3-matplotlib)")
    sys.exit(77)

ROOT = os.environ.get("TFDIST_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(T.TFDIST)))
d = T.tmpdir()


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def plot(script, src):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), src],
                          capture_output=True, text=True, timeout=120)


js = os.path.join(d, "ar.json")
p = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none",
                    os.path.join(BUILD, "benchmarks", "allreduce", "allreduce"), "-b", "1K", "-e",
                    "64K", "-f", "8", "-n", "3", "-w", "1", "-j", js],
                   capture_output=True, text=True, timeout=120)
T.check(p.returncode == 0, f"allreduce -j: exit {p.returncode}: {p.stderr.strip()[-300:]}")
if p.returncode == 0:
    doc = json.load(open(js))
    table = [l.split() for l in p.stdout.splitlines() if l.strip() and not l.startswith("#")]
    T.check([r["bytes"] for r in doc["rows"]] == [1024, 8192, 65536] and doc["ranks"] == 2,
            f"allreduce -j: rows {[r['bytes'] for r in doc['rows']]}")
    for r, line in zip(doc["rows"], table):
        for k, a in enumerate(("ompi", "mpi", "ring")):
            T.check(r[a]["wrong"] == 0, f"{a} at {r['bytes']}: wrong {r[a]['wrong']}")
            T.check(f"{r[a]['busbw_gbs']:.3f}" == line[2 + 4 * k + 2],
                    f"{a} at {r['bytes']}: json busbw {r[a]['busbw_gbs']} vs table {line}")
    q = plot("allreduce/plot_allreduce.py", js)
    png = os.path.join(d, "ar.png")
    T.check(q.returncode == 0 and q.stdout.strip() == png and png_size(png) == (700, 420),
            f"plot_allreduce: {q.returncode} {q.stdout} {q.stderr} {png_size(png) if os.path.exists(png) else None}")

# plot_scaling.py on a made-up sweep: 1..3 ranks, two rates, overlap on and off.
res = {"options": {"batch_size": 50, "rates": ["1gbit", "10gbit"], "overlap": ["on", "off"],
                   "ranks": [1, 2, 3], "hosts": 3, "allreduce": "ring"},
       "tc_s": {"1": 0.001, "2": 0.0015, "3": 0.002}, "base": {"samples_per_s": 50000},
       "rates": {}}
for i, rate in enumerate(res["options"]["rates"]):
    res["rates"][rate] = {
        "probe": {str(n): {"alpha_us": 20.0, "p2p_gbps": 1.0, "allreduce_ms": 1.0} for n in (2, 3)},
        "runs": {f"{n}/{ov}": {"samples_per_s": 10000.0 * n * (i + 1), "step_ms": 1.0, "hosts": n}
                 for n in (2, 3) for ov in ("on", "off")}}
sj = os.path.join(d, "sc.json")
json.dump(res, open(sj, "w"))
q = plot("scaling/plot_scaling.py", sj)
spng = os.path.join(d, "sc.png")
T.check(q.returncode == 0 and os.path.exists(spng) and png_size(spng) == (1000, 720),
        f"plot_scaling: {q.returncode} {q.stderr.strip()} {png_size(spng) if os.path.exists(spng) else None}")

# The same sweep in the format with variants (--allreduce ring,hier --bpps 1,4): one
# variant's rows not built, which the plot leaves out; the probe carries the codec
# times and a node-local (shm) probe the hier model reads.
res2 = json.loads(json.dumps(res))
res2["options"].update({"allreduce": ["ring", "hier"], "compression": ["none"], "bpps": [1, 4]})
res2["local"] = {"2": {"allreduce_ms": 0.3}}
for rate in res2["rates"]:
    rr = res2["rates"][rate]
    for p in rr["probe"].values():
        p.update({"codec_bf16_ms": 0.1, "codec_fp16_ms": 0.3})
    rr["probe_ar"] = {}
    rr["runs"] = {f"{n}/{ov}/{a}/none/{k}": ({"not_built": "--allreduce hier not built"}
                                             if a == "hier" and k == 4 else
                                             {"samples_per_s": 9000.0 * n * k, "hosts": n,
                                              "per_host": 1})
                  for n in (2, 3) for ov in ("on", "off") for a in ("ring", "hier") for k in (1, 4)}
sj2 = os.path.join(d, "sc2.json")
json.dump(res2, open(sj2, "w"))
q = plot("scaling/plot_scaling.py", sj2)
spng2 = os.path.join(d, "sc2.png")
T.check(q.returncode == 0 and os.path.exists(spng2) and png_size(spng2) == (1000, 720),
        f"plot_scaling (variants): {q.returncode} {q.stderr.strip()}")

# plot_train.py on a made-up bench_train.sh document.
tr = {"batch": 50, "steps": 600, "rounds": 3, "cores": 2, "load": "1.20 1.10 1.00",
      "threads_auto": "2 (auto)",
      "rows": [{"key": k, "label": k, "samples_per_s": 1000.0 * (i + 1), "rounds": [1.0]}
               for i, k in enumerate(("t1", "auto", "np2", "floor", "torch1", "ddp"))]}
tj = os.path.join(d, "tr.json")
json.dump(tr, open(tj, "w"))
q = plot("train/plot_train.py", tj)
tpng = os.path.join(d, "tr.png")
T.check(q.returncode == 0 and q.stdout.strip() == tpng and png_size(tpng) == (800, 420),
        f"plot_train: {q.returncode} {q.stderr.strip()} {png_size(tpng) if os.path.exists(tpng) else None}")

# Not their files: one line, exit 1, no PNG.
bad = os.path.join(d, "bad.json")
open(bad, "w").write('{"rows": 3}')
for script in ("allreduce/plot_allreduce.py", "scaling/plot_scaling.py", "train/plot_train.py"):
    q = plot(script, bad)
    lines = q.stderr.strip().splitlines()
    T.check(q.returncode == 1 and len(lines) == 1 and "error:" in lines[0],
            f"{script} on a bad file: {q.returncode} {q.stderr.strip()}")
T.check(not os.path.exists(os.path.join(d, "bad.png")), "a PNG from a bad file")
T.done()
