"""What scaling.py runs: tfdist and scaling_probe on simulated hosts
(launcher/netns/simhosts, launched by tfdistrun --rsh-agent nsrsh), the
compute time per step, and what the tfdist binary offers (its train --help)."""
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SIMHOSTS = os.path.join(ROOT, "launcher", "netns", "simhosts")
NSRSH = os.path.join(ROOT, "launcher", "netns", "nsrsh")
TFDISTRUN = os.path.join(ROOT, "launcher", "tfdistrun")
DATA_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class UsageError(Exception):
    pass


def find_data(folder, tmp):
    """Raw copies of the four idx files (decoding gz once, not in every rank)."""
    found = {}
    for d, _, files in os.walk(folder):
        for f in files:
            base = f[:-3] if f.endswith(".gz") else f
            if base in DATA_FILES and base not in found:
                found[base] = os.path.join(d, f)
    missing = [f for f in DATA_FILES if f not in found]
    if missing:
        raise UsageError("--data-folder %s: missing %s" % (folder, ", ".join(missing)))
    out = os.path.join(tmp, "data")
    os.makedirs(out)
    for base, path in found.items():
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as src, open(os.path.join(out, base), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def train_caps(tfdist):
    """What this binary's `train --help` offers: the --allreduce and
    --compression names, and whether it takes --backward-passes-per-step."""
    r = subprocess.run([tfdist, "train", "--help"], capture_output=True, text=True, timeout=60)
    caps = {"allreduce": set(), "compression": {"none"}, "bpps": False}
    for line in (r.stdout + r.stderr).splitlines():
        t = line.split()
        if len(t) >= 2 and t[0] == "--allreduce":
            caps["allreduce"] = set(t[1].split("|"))
        elif len(t) >= 2 and t[0] == "--compression":
            caps["compression"] = set(t[1].split("|")) | {"none"}
        elif t and t[0] == "--backward-passes-per-step":
            caps["bpps"] = True
    return caps


def not_built(caps, v):
    """Why variant v cannot run on this binary; '' when it can."""
    if v["allreduce"] not in caps["allreduce"]:
        return "--allreduce %s not built" % v["allreduce"]
    if v["compression"] not in caps["compression"]:
        return "--compression %s not built" % v["compression"]
    if v["k"] > 1 and not caps["bpps"]:
        return "--backward-passes-per-step not built"
    return ""


def variant_flags(v):
    """Only what differs from the defaults, so that a binary without the new
    flags still runs the plain rows."""
    f = ["--allreduce", v["allreduce"]]
    if v["compression"] != "none":
        f += ["--compression", v["compression"]]
    if v["k"] > 1:
        f += ["--backward-passes-per-step", str(v["k"])]
    return f


def vkey(v):
    return "%s/%s/%d" % (v["allreduce"], v["compression"], v["k"])


def vlabel(v):
    return "%s %s K=%d" % (v["allreduce"], v["compression"], v["k"])


def metrics(outputs):
    """Median samples/s over epochs >= 2, and the last final_acc/validation_acc."""
    sps, acc = [], None
    with open(os.path.join(outputs, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["epoch"] >= 2 and r["name"] == "samples_per_s":
                sps.append(r["value"])
            if r["name"] in ("final_acc", "validation_acc"):
                acc = r["value"]
    if not sps:
        raise RuntimeError("%s: no epoch >= 2 metrics (use --epochs >= 2)" % outputs)
    return statistics.median(sps), acc


def failure_line(e):
    """The last line a failed run printed (the error), for a row's report."""
    lines = [x for x in str(e).splitlines() if x.strip()]
    errs = [x for x in lines if "error" in x.lower() and "orte_base_help" not in x]
    return "run failed: " + ((errs or lines or ["?"])[-1]).strip()[:200]


def run_checked(cmd, timeout, env=None):
    r = subprocess.run(["timeout", "-k", "5", str(timeout)] + cmd, capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout[-2000:],
                                                  r.stderr[-2000:]))
    return r.stdout


def train_flags(o, data, epochs=None, max_steps=None):
    epochs = o["epochs"] if epochs is None else epochs
    max_steps = o["max_steps"] if max_steps is None else max_steps
    return ["--data-folder", data, "--epochs", str(epochs), "--max-steps", str(max_steps),
            "--batch-size", str(o["batch_size"]), "--progress", "off", "--checkpoint-every", "0",
            "--threads", "1"]


def compute_time(o, tfdist, data, tmp, n):
    """Median step time of n single-rank processes running at once (no comm)."""
    procs, outs = [], []
    for i in range(n):
        out = os.path.join(tmp, "tc%d-%d" % (n, i))
        outs.append(out)
        procs.append(subprocess.Popen(
            ["timeout", "-k", "5", "600", tfdist, "train"] + train_flags(o, data)
            + ["--outputs", out, "--logs", out + "-logs"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError("single-rank run failed: %s" % err[-1000:])
    return statistics.mean(o["batch_size"] / metrics(out)[0] for out in outs)


def placement(prefix, hosts, n):
    """Round-robin counts over the hosts, filled in host order by tfdistrun
    (--map-by slot): ranks 0..R-1 on h0, so a flat ring crosses each link once."""
    slots = [0] * hosts
    for r in range(n):
        slots[r % hosts] += 1
    used = [(i, s) for i, s in enumerate(slots) if s]
    return ",".join("%sh%d:%d" % (prefix, i, s) for i, s in used), len(used), max(slots)


def mpirun_in(prefix, hosts_spec, n, cmd):
    return [SIMHOSTS, "exec", prefix, "h0", sys.executable, TFDISTRUN, "-np", str(n),
            "-H", hosts_spec, "--network-interface", "eth1", "--rsh-agent", NSRSH] + cmd


def probe(prefix, hosts, probe_bin, n, backend, elems=None):
    """scaling_probe on n ranks over the hosts (an allreduce of elems floats,
    default the gradient); None where the probe does not know the back end
    (exit 2: not built)."""
    spec, _, _ = placement(prefix, hosts, n)
    args = [probe_bin, "--allreduce", backend] + (["--elems", str(elems)] if elems else [])
    cmd = ["timeout", "-k", "5", "300"] + mpirun_in(prefix, spec, n, args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        if "bad value" in r.stderr:
            return None
        raise RuntimeError("exit %d: %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-2000:]))
    p = json.loads(r.stdout.strip().splitlines()[-1])
    if p["wrong"] != 0:
        raise RuntimeError("scaling_probe: wrong allreduce sums: %s" % p)
    return p


def probe_local(prefix, probe_bin, per_host):
    """The node-local phase as measured: the shm allreduce of the gradient on
    per_host ranks of one host (h0)."""
    spec = "%sh0:%d" % (prefix, per_host)
    out = run_checked(mpirun_in(prefix, spec, per_host, [probe_bin, "--allreduce", "shm"]), 300)
    return json.loads(out.strip().splitlines()[-1])


def train_run(o, prefix, tfdist, data, tmp, n, overlap, v, tag, epochs=None, max_steps=None,
              hosts=None):
    spec, used, per_host = placement(prefix, hosts or o["hosts"], n)
    out = os.path.join(tmp, "run-%s-%d-%s-%s" % (tag, n, overlap, vkey(v).replace("/", "-")))
    shutil.rmtree(out, ignore_errors=True)
    run_checked(mpirun_in(prefix, spec, n, ["--tfdist", tfdist, "train"]
                          + train_flags(o, data, epochs, max_steps) + variant_flags(v)
                          + ["--overlap", overlap, "--outputs", out, "--logs", out + "-logs"]),
                900)
    sps, acc = metrics(out)
    return {"samples_per_s": sps, "final_acc": acc, "hosts": used, "per_host": per_host}
