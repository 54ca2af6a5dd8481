#!/usr/bin/python3
"""Scaling benchmark: tfdist over K simulated hosts (network namespaces joined
by a bridge, links shaped with tc tbf), against an alpha-beta model of the
allreduce (flat ring, hierarchical, 16-bit wire, K micro-batches per
allreduce; scaling_model.py) combined with the measured compute time per
step, and a projection of efficiency to 8, 64 and 256 GPUs.

    sudo benchmarks/scaling/scaling.py                 # the full sweep (root)
    sudo benchmarks/scaling/scaling.py --issue17       # issue 17's targets
    benchmarks/scaling/scaling.py --model-only         # the projection only

Model (per step, per rank; S = gradient bytes, n = ranks, BW = link rate;
hier, 16-bit and K: see scaling_model.py):
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
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import plotlib  # noqa: E402  (write_atomic)
import scaling_issue17 as I17  # noqa: E402
import scaling_run as R  # noqa: E402
from scaling_model import (GPU_STEP_MS, ALPHA_IB_US, ALPHA_NVLINK_US,  # noqa: E402,F401
                           OVERSUBSCRIBED, fit_label, hidden_fraction, layer_bytes, link_bits,
                           projection_lines, rate_bits, row_model, t_ring, t_step_model)
from scaling_run import UsageError  # noqa: E402

ALLREDUCE = ("ring", "hier", "mpi", "shm", "tcp")
COMPRESSION = ("none", "bf16", "fp16")
USAGE = """usage: scaling.py [options]
  --hosts K            simulated hosts (default 3)
  --ranks LIST         rank counts (default 1,2,3,4,5,6), placed round-robin over the hosts
                       (tfdistrun fills each host in turn: ranks 0..R-1 on h0)
  --rates LIST         tbf link rates (default 1gbit,10gbit,25gbit)
  --overlap LIST       on,off (default on,off)
  --allreduce LIST     tfdist back ends, e.g. ring,hier (default ring)
  --compression LIST   none,bf16,fp16 (default none)
  --bpps LIST          --backward-passes-per-step K values, e.g. 1,2,4 (default 1)
  --epochs N           epochs per run; the first is warm-up (default 4)
  --max-steps N        steps per epoch (default 60)
  --batch-size N       per rank (default 50)
  --data-folder DIR    idx files (default /usr/share/datasets/fashion-mnist)
  --json FILE          also write every measurement as JSON
  --issue17            the targets of issue 17 instead of the sweep: 2 hosts at 1 Gbit/s,
                       hier vs ring (2x2), bf16/fp16 vs none (2x1, plus final_acc after
                       --acc-epochs whole epochs), K=2,4 vs K=1 (2x1); PASS/FAIL per target
  --rounds N           --issue17: runs of each row, taking turns (default 3)
  --acc-epochs N       --issue17: epochs of the final_acc comparison (default 2, at least 2;
                       0: skip)
  --gpu-step-ms X      GPU step time for the projection (default %.4f: the fused step
                       measured on an H200, benchmarks/gpu/README.md)
  --alpha-ib-us X      assumed InfiniBand hop latency (default %.1f)
  --alpha-nvlink-us X  assumed NVLink hop latency (default %.1f)
  --model-only         print the projection only (no root, no runs)
""" % (GPU_STEP_MS, ALPHA_IB_US, ALPHA_NVLINK_US)


def parse_args(argv):
    o = {"hosts": 3, "ranks": [1, 2, 3, 4, 5, 6], "rates": ["1gbit", "10gbit", "25gbit"],
         "overlap": ["on", "off"], "allreduce": ["ring"], "compression": ["none"], "bpps": [1],
         "epochs": 4, "max_steps": 60, "rounds": 3, "acc_epochs": 2,
         "batch_size": 50, "data_folder": "/usr/share/datasets/fashion-mnist", "json": None,
         "gpu_step_ms": None, "alpha_ib_us": ALPHA_IB_US, "alpha_nvlink_us": ALPHA_NVLINK_US,
         "model_only": False, "issue17": False}
    ints = {"--hosts": "hosts", "--epochs": "epochs", "--max-steps": "max_steps",
            "--batch-size": "batch_size", "--rounds": "rounds"}
    floats = {"--gpu-step-ms": "gpu_step_ms", "--alpha-ib-us": "alpha_ib_us",
              "--alpha-nvlink-us": "alpha_nvlink_us"}
    i = 0
    while i < len(argv):
        f = argv[i]
        if f in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if f in ("--model-only", "--issue17"):
            o[f[2:].replace("-", "_")] = True
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
            elif f == "--acc-epochs":
                o["acc_epochs"] = int(v)
                if o["acc_epochs"] < 0 or o["acc_epochs"] == 1:
                    raise ValueError
            elif f == "--allreduce":
                o["allreduce"] = v.split(",")
                if not set(o["allreduce"]) <= set(ALLREDUCE):
                    raise ValueError
            elif f == "--compression":
                o["compression"] = v.split(",")
                if not set(o["compression"]) <= set(COMPRESSION):
                    raise ValueError
            elif f == "--bpps":
                o["bpps"] = [int(x) for x in v.split(",")]
                if min(o["bpps"]) < 1:
                    raise ValueError
            elif f in ("--data-folder", "--json"):
                o[f[2:].replace("-", "_")] = v
            else:
                raise UsageError("unknown flag '%s' (see --help)" % f)
        except ValueError:
            raise UsageError("%s: bad value '%s'" % (f, v)) from None
        i += 2
    return o


def variants(o):
    return [{"allreduce": a, "compression": c, "k": k}
            for a in o["allreduce"] for c in o["compression"] for k in o["bpps"]]


def run_key(n, ov, v):
    return "%d/%s/%s" % (n, ov, R.vkey(v))


def sweep(o, prefix, tfdist, probe_bin, tmp, caps):
    data = R.find_data(o["data_folder"], tmp)
    res = {"tc_s": {}, "rates": {}, "local": {}, "caps": {k: sorted(v) if isinstance(v, set) else v
                                                          for k, v in caps.items()},
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    for n in sorted(set(o["ranks"]) | {1}):  # 1: the efficiency's reference, always
        res["tc_s"][n] = R.compute_time(o, tfdist, data, tmp, n)
        print("# compute time per step with %d concurrent ranks: %.3f ms"
              % (n, 1e3 * res["tc_s"][n]), flush=True)
    vs = variants(o)
    plain = {"allreduce": "ring", "compression": "none", "k": 1}  # 1 rank: no allreduce runs
    base = None
    if 1 in o["ranks"]:
        base = R.train_run(o, prefix, tfdist, data, tmp, 1, "off", plain, "base")
    if any(v["allreduce"] == "hier" for v in vs):
        for n in o["ranks"]:
            r = R.placement(prefix, o["hosts"], n)[2]
            if r > 1 and str(r) not in res["local"]:
                res["local"][str(r)] = R.probe_local(prefix, probe_bin, r)
    for rate in o["rates"]:
        R.run_checked([R.SIMHOSTS, "shape", prefix, rate], 60)
        rr = {"probe": {}, "probe_ar": {}, "runs": {}}
        res["rates"][rate] = rr
        # beta: 2 ranks, one on each of two hosts, the ring moves S each way
        rr["link"] = R.probe(prefix, o["hosts"], probe_bin, 2, "ring")
        for n in o["ranks"]:
            if n == 1:
                continue
            rr["probe"][n] = R.probe(prefix, o["hosts"], probe_bin, n, "ring")
            for a in o["allreduce"]:
                if a != "ring":
                    try:
                        rr["probe_ar"]["%d/%s" % (n, a)] = R.probe(prefix, o["hosts"], probe_bin,
                                                                   n, a)
                    except RuntimeError:  # e.g. shm across hosts: the training row says why
                        rr["probe_ar"]["%d/%s" % (n, a)] = None
            for v in vs:
                why = R.not_built(caps, v)
                for ov in o["overlap"]:
                    if why:
                        rr["runs"][run_key(n, ov, v)] = {"not_built": why}
                        continue
                    try:
                        rr["runs"][run_key(n, ov, v)] = R.train_run(o, prefix, tfdist, data, tmp,
                                                                    n, ov, v, rate)
                    except RuntimeError as e:  # one broken row must not lose the others
                        rr["runs"][run_key(n, ov, v)] = {
                            "not_built": R.failure_line(e)}
            print("# %s: %d ranks done" % (rate, n), flush=True)
    res["base"] = base
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    return res


def print_tables(o, res):
    B = o["batch_size"]
    base = res["base"]
    sps1 = base["samples_per_s"] if base else B / res["tc_s"][1]
    print("\n# tfdist scaling on %d simulated hosts (netns + bridge, tc tbf), batch %d/rank, "
          "%d steps/epoch, median of epochs 2..%d" % (o["hosts"], B, o["max_steps"], o["epochs"]))
    print("# machine: %d CPUs, load average %s at start, %s at end (other jobs share it)"
          % (os.cpu_count(), "/".join(res["loadavg_start"]), "/".join(res["loadavg_end"])))
    print("# 1 rank: %.0f samples/s, step %.3f ms (efficiency 100%%)" % (sps1, 1e3 * B / sps1))
    print("# step_ms: time per n x %d samples (one micro-batch per rank) = n*B / samples/s; t_c: "
          "compute per step with n concurrent ranks; ar_ms: the back end's allreduce of %d bytes "
          "measured by scaling_probe (uncompressed); ar_mod: the model's allreduce for the row, at "
          "the link probe's effective rate (beta); "
          "step_mod = t_c + ar_mod/K (overlap: see the model); fit = step_mod/step_ms - 1, "
          "within 15%% where ranks <= cores" % (B, sum(layer_bytes())))
    over = False
    for rate in o["rates"]:
        rr = res["rates"][rate]
        print("\n# link %s" % rate)
        if rr.get("link"):
            print("# link probe (2 ranks on 2 hosts, ring): allreduce %.3f ms, alpha %.1f us -> "
                  "beta: %.3f Gbit/s effective, the model's link rate"
                  % (rr["link"]["allreduce_ms"], rr["link"]["alpha_us"],
                     link_bits(rr["link"], sum(layer_bytes())) / 1e9))
        print("%5s %5s %4s %-18s %11s %7s %9s %8s %8s %8s %9s %9s %9s %9s %10s"
              % ("ranks", "hosts", "ovl", "variant", "samples/s", "eff", "step_ms", "t_c_ms",
                 "alpha_us", "p2p_Gb/s", "ar_ms", "ar_mod_ms", "step_mod", "mod_sps", "fit"))
        for n in o["ranks"]:
            if n == 1:
                continue
            _, hosts, per_host = R.placement("x", o["hosts"], n)
            for v in variants(o):
                for ov in o["overlap"]:
                    m = rr["runs"][run_key(n, ov, v)]
                    if "not_built" in m:
                        why = m["not_built"]
                        print("%5d %5d %4s %-18s   %s" % (n, hosts, ov, R.vlabel(v), why if
                                                        why.startswith("run failed") else
                                                        "not built: " + why))
                        continue
                    t_mod, ar_mod, tc, p = row_model(res, rate, n, hosts, per_host, v, ov, B)
                    pa = rr["probe_ar"].get("%d/%s" % (n, v["allreduce"])) if v["allreduce"] != \
                        "ring" else p
                    ar_ms = ("%9.3f" % pa["allreduce_ms"]) if pa and v["compression"] == "none" \
                        else "%9s" % "-"
                    t_meas = n * B / m["samples_per_s"]
                    over = over or n > (os.cpu_count() or 1)
                    print("%5d %5d %4s %-18s %11.0f %6.1f%% %9.3f %8.3f %8.1f %8.2f %s %9.3f %9.3f "
                          "%9.0f %10s"
                          % (n, hosts, ov, R.vlabel(v), m["samples_per_s"],
                             100 * m["samples_per_s"] / (n * sps1), 1e3 * t_meas, 1e3 * tc,
                             p["alpha_us"], p["p2p_gbps"], ar_ms, 1e3 * ar_mod, 1e3 * t_mod,
                             n * B / t_mod, fit_label(n, t_meas, t_mod)))
    if over:
        print("\n# n>cores: " + OVERSUBSCRIBED)


def print_projection(o):
    gpu_ms = o["gpu_step_ms"] or GPU_STEP_MS
    print()
    print("\n".join(projection_lines(gpu_ms, o["gpu_step_ms"] is None, o["alpha_ib_us"],
                                     o["alpha_nvlink_us"])))


def main(argv):
    try:
        o = parse_args(argv)
    except UsageError as e:
        print("scaling.py: error: %s" % e, file=sys.stderr)
        return 2
    if o["model_only"]:
        print_projection(o)
        return 0
    if os.geteuid() != 0:
        print("scaling.py: error: the sweep needs root for network namespaces "
              "(or use --model-only)", file=sys.stderr)
        return 2
    build = os.environ.get("TFDIST_BUILD", os.path.join(R.ROOT, "build"))
    tfdist = os.environ.get("TFDIST", os.path.join(build, "cli", "tfdist"))
    probe_bin = os.path.join(build, "benchmarks", "scaling", "scaling_probe")
    for path in (tfdist, probe_bin):
        if not os.access(path, os.X_OK):
            print("scaling.py: error: %s not built (ninja -C build)" % path, file=sys.stderr)
            return 2
    caps = R.train_caps(tfdist)
    prefix = ("sc%x" % os.getpid())[:10]

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
    hosts = 2 if o["issue17"] else o["hosts"]
    try:
        with tempfile.TemporaryDirectory(prefix="tfdist-scaling.") as tmp:
            R.run_checked([R.SIMHOSTS, "up", prefix, str(hosts)], 60)
            if o["issue17"]:
                res = I17.run(o, prefix, tfdist, probe_bin, tmp, caps)
            else:
                res = sweep(o, prefix, tfdist, probe_bin, tmp, caps)
    finally:
        subprocess.run([R.SIMHOSTS, "down", prefix], check=False)
    if o["issue17"]:
        I17.report(o, res)
    else:
        print_tables(o, res)
    print_projection(o)
    print("\n# %s took %.0f s" % ("--issue17" if o["issue17"] else "sweep", time.time() - t0))
    if o["json"]:
        res["options"] = o
        plotlib.write_atomic(o["json"], lambda f: f.write(json.dumps(res, indent=1).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
