#!/usr/bin/python3
"""Scaling benchmark: tfdist over K simulated hosts (network namespaces joined
by a bridge, links shaped with tc tbf), against an alpha-beta model of ring
allreduce combined with the measured compute time per step, and a projection
of efficiency to 8..256 GPUs on InfiniBand and NVLink.

    sudo benchmarks/scaling/scaling.py                 # the full sweep (root)
    benchmarks/scaling/scaling.py --model-only         # the projection only

Model (per step, per rank; S = gradient bytes, n = ranks, BW = link rate):
    t_ar(S, n)   = 2(n-1)/n * S/BW + 2(n-1) * alpha           ring allreduce
    overlap off:   t_step = t_compute(n) + t_ar(S, n)
    overlap on:    t_step = t_compute(n) + t_ar(S1, n)
                            + max(0, t_ar(S2, n) + t_ar(S3, n) - f * t_compute(n))
      layer k's gradient (S_k bytes) is reduced as soon as its backward ends;
      the first layer's gradient is ready last, so only the two small layers
      can hide behind the first layer's backward, a fraction f of the step's
      FLOPs (f = 2*784*h1 / FLOPs per sample of forward + backward).
t_compute(n) is measured: n single-rank tfdist processes run at once on this
machine, so it carries the same CPU sharing as the n-rank run. alpha is the
measured one-way latency of an 8-byte message between hosts (scaling_probe).
Efficiency = samples/s(n) / (n * samples/s(1))."""
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SIMHOSTS = os.path.join(ROOT, "launcher", "netns", "simhosts")
NSRSH = os.path.join(ROOT, "launcher", "netns", "nsrsh")
TFDISTRUN = os.path.join(ROOT, "launcher", "tfdistrun")
DATA_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# ASSUMPTION until the GPU step time is measured on a real GPU: one training
# step (batch 50, 784-300-100-10, forward + backward + SGD, CUDA graph replay)
# on one H100. Replace with --gpu-step-ms once measured.
GPU_STEP_MS_PLACEHOLDER = 0.10
# ASSUMPTIONS for the projection: per-message latency of one ring hop.
ALPHA_IB_US = 5.0        # NCCL ring over InfiniBand, host-to-host
ALPHA_NVLINK_US = 2.0    # NCCL ring over NVLink/NVSwitch
NETWORKS = [("IB 100G", 100e9, "ib"), ("IB 200G", 200e9, "ib"), ("IB 400G", 400e9, "ib"),
            ("NVLink4 450GB/s", 3600e9, "nvlink")]
PROJ_RANKS = [8, 16, 32, 64, 128, 256]

USAGE = """usage: scaling.py [options]
  --hosts K            simulated hosts (default 3)
  --ranks LIST         rank counts (default 1,2,3,4,5,6), placed round-robin over the hosts
  --rates LIST         tbf link rates (default 1gbit,10gbit,25gbit)
  --overlap LIST       on,off (default on,off)
  --allreduce NAME     tfdist back end (default ring)
  --epochs N           epochs per run; the first is warm-up (default 4)
  --max-steps N        steps per epoch (default 60)
  --batch-size N       per rank (default 50)
  --data-folder DIR    idx files (default /usr/share/datasets/fashion-mnist)
  --json FILE          also write every measurement as JSON
  --gpu-step-ms X      measured GPU step time for the projection (default: placeholder %.2f ms)
  --alpha-ib-us X      assumed InfiniBand hop latency (default %.1f)
  --alpha-nvlink-us X  assumed NVLink hop latency (default %.1f)
  --model-only         print the projection only (no root, no runs)
""" % (GPU_STEP_MS_PLACEHOLDER, ALPHA_IB_US, ALPHA_NVLINK_US)


class UsageError(Exception):
    pass


def parse_args(argv):
    o = {"hosts": 3, "ranks": [1, 2, 3, 4, 5, 6], "rates": ["1gbit", "10gbit", "25gbit"],
         "overlap": ["on", "off"], "allreduce": "ring", "epochs": 4, "max_steps": 60,
         "batch_size": 50, "data_folder": "/usr/share/datasets/fashion-mnist", "json": None,
         "gpu_step_ms": None, "alpha_ib_us": ALPHA_IB_US, "alpha_nvlink_us": ALPHA_NVLINK_US,
         "model_only": False}
    ints = {"--hosts": "hosts", "--epochs": "epochs", "--max-steps": "max_steps",
            "--batch-size": "batch_size"}
    floats = {"--gpu-step-ms": "gpu_step_ms", "--alpha-ib-us": "alpha_ib_us",
              "--alpha-nvlink-us": "alpha_nvlink_us"}
    i = 0
    while i < len(argv):
        f = argv[i]
        if f in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if f == "--model-only":
            o["model_only"] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise UsageError("%s needs a value" % f)
        v = argv[i + 1]
        try:
            if f in ints:
                o[ints[f]] = int(v)
                if o[ints[f]] < 1:
                    raise ValueError
            elif f in floats:
                o[floats[f]] = float(v)
                if not o[floats[f]] > 0:
                    raise ValueError
            elif f == "--ranks":
                o["ranks"] = [int(x) for x in v.split(",")]
                if min(o["ranks"]) < 1:
                    raise ValueError
            elif f == "--rates":
                o["rates"] = v.split(",")
                for r in o["rates"]:
                    if not (r.endswith("gbit") or r.endswith("mbit")) or not r[:-4].isdigit():
                        raise ValueError
            elif f == "--overlap":
                o["overlap"] = v.split(",")
                if not set(o["overlap"]) <= {"on", "off"}:
                    raise ValueError
            elif f in ("--allreduce", "--data-folder", "--json"):
                o[f[2:].replace("-", "_")] = v
            else:
                raise UsageError("unknown flag '%s' (see --help)" % f)
        except ValueError:
            raise UsageError("%s: bad value '%s'" % (f, v)) from None
        i += 2
    return o


# ---------------------------------------------------------------- the model

def layer_bytes(h1=300, h2=100):
    dims = [784, h1, h2, 10]
    return [4 * (dims[k] * dims[k + 1] + dims[k + 1]) for k in range(3)]


def hidden_fraction(h1=300, h2=100):
    """Share of a step's FLOPs in the first layer's weight gradient: the
    backward work that runs after the two small layers' gradients are ready."""
    fwd = 2 * (784 * h1 + h1 * h2 + h2 * 10)
    bwd = fwd + 2 * (h1 * h2 + h2 * 10)   # dW for all, dX for layers 2 and 3
    return 2 * 784 * h1 / (fwd + bwd)


def t_ring(nbytes, n, bw_bits, alpha_s):
    if n < 2:
        return 0.0
    return 2.0 * (n - 1) / n * nbytes * 8.0 / bw_bits + 2.0 * (n - 1) * alpha_s


def t_step_model(tc_s, n, bw_bits, alpha_s, overlap, sizes=None, f=None):
    sizes = sizes or layer_bytes()
    f = hidden_fraction() if f is None else f
    if not overlap:
        return tc_s + t_ring(sum(sizes), n, bw_bits, alpha_s)
    small = t_ring(sizes[1], n, bw_bits, alpha_s) + t_ring(sizes[2], n, bw_bits, alpha_s)
    return tc_s + t_ring(sizes[0], n, bw_bits, alpha_s) + max(0.0, small - f * tc_s)


def print_projection(gpu_step_ms, measured, alpha_ib_us, alpha_nvlink_us):
    label = ("measured" if measured else
             "ASSUMPTION: placeholder, not measured; rerun with --gpu-step-ms")
    S = sum(layer_bytes())
    print("\n# Projection: ring allreduce of %d bytes per step, GPU step time %.3f ms (%s)"
          % (S, gpu_step_ms, label))
    print("# alpha (assumed): InfiniBand %.1f us, NVLink %.1f us per hop. Efficiency = "
          "t_gpu / t_step; 'ovl' uses the overlap model above." % (alpha_ib_us, alpha_nvlink_us))
    print("# NVLink rates beyond 8 GPUs assume one NVLink-switch domain (e.g. NVL72/256-GPU systems).")
    hdr = "%-16s" % "network" + "".join("%14s" % ("%d GPUs" % n) for n in PROJ_RANKS)
    print(hdr)
    t_gpu = gpu_step_ms / 1e3
    for name, bw, kind in NETWORKS:
        alpha = (alpha_ib_us if kind == "ib" else alpha_nvlink_us) / 1e6
        row = "%-16s" % name
        for n in PROJ_RANKS:
            e_off = t_gpu / t_step_model(t_gpu, n, bw, alpha, False)
            e_on = t_gpu / t_step_model(t_gpu, n, bw, alpha, True)
            row += "%14s" % ("%4.1f%%/%4.1f%%" % (100 * e_off, 100 * e_on))
        print(row + "   (no overlap / ovl)")
    print("# allreduce time (ms), bandwidth term + latency term:")
    for name, bw, kind in NETWORKS:
        alpha = (alpha_ib_us if kind == "ib" else alpha_nvlink_us) / 1e6
        row = "%-16s" % name
        for n in PROJ_RANKS:
            row += "%14s" % ("%.3f+%.3f" % (1e3 * t_ring(S, n, bw, 0.0), 1e3 * 2 * (n - 1) * alpha))
        print(row)


# ----------------------------------------------------------- the measurements

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


def epoch_medians(outputs):
    sps, step = [], []
    with open(os.path.join(outputs, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["epoch"] >= 2 and r["name"] == "samples_per_s":
                sps.append(r["value"])
            if r["epoch"] >= 2 and r["name"] == "step_time_ms":
                step.append(r["value"])
    if not sps:
        raise RuntimeError("%s: no epoch >= 2 metrics (use --epochs >= 2)" % outputs)
    return statistics.median(sps), statistics.median(step)


def run_checked(cmd, timeout, env=None):
    r = subprocess.run(["timeout", "-k", "5", str(timeout)] + cmd, capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("exit %d: %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout[-2000:],
                                                  r.stderr[-2000:]))
    return r.stdout


def train_flags(o, data):
    return ["--data-folder", data, "--epochs", str(o["epochs"]), "--max-steps", str(o["max_steps"]),
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
    return statistics.mean(epoch_medians(out)[1] for out in outs) / 1e3


def placement(prefix, hosts, n):
    slots = [0] * hosts
    for r in range(n):
        slots[r % hosts] += 1
    used = [(i, s) for i, s in enumerate(slots) if s]
    return ",".join("%sh%d:%d" % (prefix, i, s) for i, s in used), len(used)


def mpirun_in(prefix, hosts_spec, n, cmd):
    return [SIMHOSTS, "exec", prefix, "h0", sys.executable, TFDISTRUN, "-np", str(n),
            "-H", hosts_spec, "--network-interface", "eth1", "--rsh-agent", NSRSH] + cmd


def probe(o, prefix, probe_bin, n):
    spec, used = placement(prefix, o["hosts"], n)
    out = run_checked(mpirun_in(prefix, spec, n, [probe_bin, "--allreduce", o["allreduce"]]), 300)
    r = json.loads(out.strip().splitlines()[-1])
    if r["wrong"] != 0:
        raise RuntimeError("scaling_probe: wrong allreduce sums: %s" % r)
    return r


def train_run(o, prefix, tfdist, data, tmp, n, overlap, tag):
    spec, used = placement(prefix, o["hosts"], n)
    out = os.path.join(tmp, "run-%s-%d-%s" % (tag, n, overlap))
    run_checked(mpirun_in(prefix, spec, n, ["--tfdist", tfdist, "train"] + train_flags(o, data)
                          + ["--allreduce", o["allreduce"], "--overlap", overlap,
                             "--outputs", out, "--logs", out + "-logs"]), 600)
    sps, step_ms = epoch_medians(out)
    return {"samples_per_s": sps, "step_ms": step_ms, "hosts": used}


def rate_bits(rate):
    return float(rate[:-4]) * (1e9 if rate.endswith("gbit") else 1e6)


def sweep(o, prefix, tfdist, probe_bin, tmp):
    data = find_data(o["data_folder"], tmp)
    res = {"tc_s": {}, "rates": {}, "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    for n in o["ranks"]:
        res["tc_s"][n] = compute_time(o, tfdist, data, tmp, n)
        print("# compute time per step with %d concurrent ranks: %.3f ms"
              % (n, 1e3 * res["tc_s"][n]), flush=True)
    base = None
    if 1 in o["ranks"]:
        base = train_run(o, prefix, tfdist, data, tmp, 1, "off", "base")
    for rate in o["rates"]:
        run_checked([SIMHOSTS, "shape", prefix, rate], 60)
        rr = {"probe": {}, "runs": {}}
        res["rates"][rate] = rr
        for n in o["ranks"]:
            if n == 1:
                continue
            rr["probe"][n] = probe(o, prefix, probe_bin, n)
            for ov in o["overlap"]:
                rr["runs"]["%d/%s" % (n, ov)] = train_run(o, prefix, tfdist, data, tmp, n, ov, rate)
            print("# %s: %d ranks done" % (rate, n), flush=True)
    res["base"] = base
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    return res


def print_tables(o, res):
    B = o["batch_size"]
    base = res["base"]
    sps1 = base["samples_per_s"] if base else B / res["tc_s"][1]
    t1 = B / sps1
    print("\n# tfdist scaling on %d simulated hosts (netns + bridge, tc tbf), --allreduce %s, "
          "batch %d/rank, %d steps/epoch, median of epochs 2..%d"
          % (o["hosts"], o["allreduce"], B, o["max_steps"], o["epochs"]))
    print("# machine: %d CPUs, load average %s at start, %s at end (other jobs share it)"
          % (os.cpu_count(), "/".join(res["loadavg_start"]), "/".join(res["loadavg_end"])))
    print("# 1 rank: %.0f samples/s, step %.3f ms (efficiency 100%%)" % (sps1, 1e3 * t1))
    print("# t_c: compute per step with n concurrent ranks; ar_ms: allreduce of %d bytes measured "
          "by scaling_probe; ar_mod: ring model at the nominal link rate and measured alpha; "
          "ar_p2p: the same model at the measured point-to-point bandwidth; step_mod = t_c + "
          "ar_mod (overlap: see the model); eff = samples/s / (n * samples/s of 1 rank)"
          % sum(layer_bytes()))
    for rate in o["rates"]:
        rr = res["rates"][rate]
        bw = rate_bits(rate)
        print("\n# link %s" % rate)
        print("%5s %5s %4s %11s %7s %9s %8s %8s %8s %9s %9s %9s %9s %9s %9s"
              % ("ranks", "hosts", "ovl", "samples/s", "eff", "step_ms", "t_c_ms", "alpha_us",
                 "p2p_Gb/s", "ar_ms", "ar_mod_ms", "ar_p2p_ms", "step_mod", "mod_sps", "mod_eff"))
        for n in o["ranks"]:
            if n == 1:
                continue
            p = rr["probe"][n]
            alpha = p["alpha_us"] / 1e6
            tc = res["tc_s"][n]
            for ov in o["overlap"]:
                m = rr["runs"]["%d/%s" % (n, ov)]
                t_model = t_step_model(tc, n, bw, alpha, ov == "on")
                sps_model = n * B / t_model
                ar_p2p = t_ring(sum(layer_bytes()), n, p["p2p_gbps"] * 1e9, alpha)
                print("%5d %5d %4s %11.0f %6.1f%% %9.3f %8.3f %8.1f %8.2f %9.3f %9.3f %9.3f %9.3f %9.0f %8.1f%%"
                      % (n, m["hosts"], ov, m["samples_per_s"], 100 * m["samples_per_s"] / (n * sps1),
                         m["step_ms"], 1e3 * tc, p["alpha_us"], p["p2p_gbps"], p["allreduce_ms"],
                         1e3 * t_ring(sum(layer_bytes()), n, bw, alpha), 1e3 * ar_p2p,
                         1e3 * t_model, sps_model, 100 * sps_model / (n * sps1)))


def main(argv):
    try:
        o = parse_args(argv)
    except UsageError as e:
        print("scaling.py: error: %s" % e, file=sys.stderr)
        return 2
    gpu_ms = o["gpu_step_ms"] or GPU_STEP_MS_PLACEHOLDER
    if o["model_only"]:
        print_projection(gpu_ms, o["gpu_step_ms"] is not None, o["alpha_ib_us"], o["alpha_nvlink_us"])
        return 0
    if os.geteuid() != 0:
        print("scaling.py: error: the sweep needs root for network namespaces "
              "(or use --model-only)", file=sys.stderr)
        return 2
    build = os.environ.get("TFDIST_BUILD", os.path.join(ROOT, "build"))
    tfdist = os.environ.get("TFDIST", os.path.join(build, "cli", "tfdist"))
    probe_bin = os.path.join(build, "benchmarks", "scaling", "scaling_probe")
    for path in (tfdist, probe_bin):
        if not os.access(path, os.X_OK):
            print("scaling.py: error: %s not built (ninja -C build)" % path, file=sys.stderr)
            return 2
    prefix = "sc%x" % os.getpid()
    prefix = prefix[:10]

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.environ.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    # The simulated hosts share this machine's cores: ranks that wait in MPI
    # must yield, or they spin and starve the ranks doing the work (measured:
    # a 3-rank 1 MiB allreduce took 60-90 ms spinning, 4 ms yielding).
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="tfdist-scaling.") as tmp:
            run_checked([SIMHOSTS, "up", prefix, str(o["hosts"])], 60)
            res = sweep(o, prefix, tfdist, probe_bin, tmp)
    finally:
        subprocess.run([SIMHOSTS, "down", prefix], check=False)
    print_tables(o, res)
    print_projection(gpu_ms, o["gpu_step_ms"] is not None, o["alpha_ib_us"], o["alpha_nvlink_us"])
    print("\n# sweep took %.0f s" % (time.time() - t0))
    if o["json"]:
        res["options"] = o
        with open(o["json"], "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
