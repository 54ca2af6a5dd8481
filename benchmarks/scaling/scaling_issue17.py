"""scaling.py --issue17: the targets of issue 17 on 2 simulated hosts at
1 Gbit/s, each comparison's rows run in turns (--rounds), medians compared:
  hier vs ring, 2 hosts x 2 ranks:        hier >= 1.3x the samples/s of ring
  bf16 vs none, 2 hosts x 1 rank:         bf16 >= 1.7x (fp16 shown beside it),
                                          final_acc after --acc-epochs within 0.005
  K=4 vs K=1, 2 hosts x 1 rank:           K=4 >= 3x (K=2 shown beside it)
Every row shows measured against the model (scaling_model.py); a row whose
flag this tfdist does not have is reported as not built."""
import os
import statistics

import scaling_run as R
from scaling_model import OVERSUBSCRIBED, fit_label, layer_bytes, link_bits, row_model

RATE = "1gbit"
HOSTS = 2


def _v(a, c, k):
    return {"allreduce": a, "compression": c, "k": k}


# (name, ranks per host, rows, (target row, base row, least ratio))
GROUPS = (
    ("hier vs ring", 2, (_v("ring", "none", 1), _v("hier", "none", 1)), (1, 0, 1.3)),
    ("16-bit vs none", 1, (_v("ring", "none", 1), _v("ring", "bf16", 1), _v("ring", "fp16", 1)),
     (1, 0, 1.7)),
    ("K micro-batches per allreduce", 1,
     (_v("ring", "none", 1), _v("ring", "none", 2), _v("ring", "none", 4)), (2, 0, 3.0)),
)
ACC_ROWS = (_v("ring", "none", 1), _v("ring", "bf16", 1))
ACC_BAND = 0.005


def run(o, prefix, tfdist, probe_bin, tmp, caps):
    """Every measurement of the preset; overlap off in every row."""
    data = R.find_data(o["data_folder"], tmp)
    res = {"tc_s": {}, "local": {}, "rates": {RATE: {"probe": {}, "probe_ar": {}}},
           "groups": [], "acc": None,
           "caps": {k: sorted(v) if isinstance(v, set) else v for k, v in caps.items()},
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    for per_host in (1, 2):
        n = HOSTS * per_host
        res["tc_s"][str(n)] = R.compute_time(o, tfdist, data, tmp, n)
        print("# compute time per step with %d concurrent ranks: %.3f ms"
              % (n, 1e3 * res["tc_s"][str(n)]), flush=True)
    res["local"]["2"] = R.probe_local(prefix, probe_bin, 2)
    R.run_checked([R.SIMHOSTS, "shape", prefix, RATE], 60)
    rr = res["rates"][RATE]
    for per_host in (1, 2):
        n = HOSTS * per_host
        rr["probe"][str(n)] = R.probe(prefix, HOSTS, probe_bin, n, "ring")
    rr["link"] = rr["probe"]["2"]  # beta: the 2x1 ring moves S each way
    # beta at the 16-bit rows' wire size: the 2x1 ring of half the gradient moves S/2 each way
    rr["link16"] = R.probe(prefix, HOSTS, probe_bin, 2, "ring", elems=sum(layer_bytes()) // 8)
    rr["probe_ar"]["4/hier"] = R.probe(prefix, HOSTS, probe_bin, 4, "hier")
    for name, per_host, rows, _ in GROUPS:
        n = HOSTS * per_host
        g = {"name": name, "ranks": n, "rows": []}
        for v in rows:
            g["rows"].append({"variant": v, "not_built": R.not_built(caps, v), "sps": []})
        for rnd in range(o["rounds"]):
            for row in g["rows"]:
                if row["not_built"]:
                    continue
                try:
                    m = R.train_run(o, prefix, tfdist, data, tmp, n, "off", row["variant"],
                                    "i17", hosts=HOSTS)
                except RuntimeError as e:  # one broken row must not lose the others
                    row["not_built"] = R.failure_line(e)
                    print("# %s: %s" % (R.vlabel(row["variant"]), row["not_built"]), flush=True)
                    continue
                row["sps"].append(m["samples_per_s"])
        res["groups"].append(g)
        print("# %s: done" % name, flush=True)
    if o["acc_epochs"]:
        acc = []
        for v in ACC_ROWS:
            why = R.not_built(caps, v)
            m = None if why else R.train_run(o, prefix, tfdist, data, tmp, HOSTS, "off", v, "acc",
                                             epochs=o["acc_epochs"], max_steps=0, hosts=HOSTS)
            acc.append({"variant": v, "not_built": why, "final_acc": m and m["final_acc"]})
        res["acc"] = acc
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    return res


def _verdict(ratio, least):
    return "PASS" if ratio >= least else "FAIL"


def report(o, res):
    B = o["batch_size"]
    S = sum(layer_bytes())
    print("\n# issue 17 targets: %d simulated hosts, links %s (tc tbf), batch %d/rank, %d steps/"
          "epoch, median of epochs 2..%d per run, %d runs per row taking turns, overlap off"
          % (HOSTS, RATE, B, o["max_steps"], o["epochs"], o["rounds"]))
    print("# machine: %d CPUs, load average %s at start, %s at end (other jobs share it)"
          % (os.cpu_count(), "/".join(res["loadavg_start"]), "/".join(res["loadavg_end"])))
    rr = res["rates"][RATE]
    loc = res["local"]["2"]
    print("# probes: alpha %.1f us, point to point %.2f Gbit/s (2x1); ring allreduce of %d bytes "
          "%.3f ms (2x1), %.3f ms (2x2); hier %s (2x2); node-local shm allreduce, 2 ranks: %.3f ms;"
          " codec (encode + decode into fp32) of the gradient: bf16 %.3f ms, fp16 %.3f ms"
          % (rr["probe"]["2"]["alpha_us"], rr["probe"]["2"]["p2p_gbps"], S,
             rr["probe"]["2"]["allreduce_ms"], rr["probe"]["4"]["allreduce_ms"],
             ("%.3f ms" % rr["probe_ar"]["4/hier"]["allreduce_ms"]) if rr["probe_ar"]["4/hier"]
             else "not built", loc["allreduce_ms"], rr["probe"]["2"]["codec_bf16_ms"],
             rr["probe"]["2"]["codec_fp16_ms"]))
    print("# the model's link rate (beta) from the 2x1 ring allreduce: %.3f Gbit/s effective "
          "(nominal 1); its 2x1 ring rows therefore test t_c + t_allreduce, the others predict"
          % (link_bits(rr["link"], S) / 1e9))
    if rr.get("link16"):
        print("# beta of the 16-bit rows, from the 2x1 ring allreduce of S/2 bytes (their wire "
              "bytes): %.3f Gbit/s (%.3f ms)" % (link_bits(rr["link16"], S / 2) / 1e9,
                                                rr["link16"]["allreduce_ms"]))
    over = False
    for (name, per_host, _, (ti, bi, least)), g in zip(GROUPS, res["groups"]):
        n = g["ranks"]
        print("\n## %s: %d hosts x %d rank%s" % (name, HOSTS, per_host, "s" if per_host > 1 else ""))
        print("%-18s %-30s %11s %9s %9s %9s %9s %10s" % ("variant", "samples/s per run", "median",
                                                         "step_ms", "ar_mod", "step_mod",
                                                         "mod_sps", "fit"))
        med = []
        for row in g["rows"]:
            v = row["variant"]
            if row["not_built"] or not row["sps"]:
                print("%-18s %s" % (R.vlabel(v), row["not_built"] if row["not_built"].startswith(
                    "run failed") else "not built: " + row["not_built"]))
                med.append(None)
                continue
            m = statistics.median(row["sps"])
            med.append(m)
            t_mod, ar_mod, _, _ = row_model(res, RATE, n, HOSTS, per_host, v, "off", B)
            t_meas = n * B / m
            over = over or n > (os.cpu_count() or 1)
            print("%-18s %-30s %11.0f %9.3f %9.3f %9.3f %9.0f %10s"
                  % (R.vlabel(v), ",".join("%.0f" % x for x in row["sps"]), m, 1e3 * t_meas,
                     1e3 * ar_mod, 1e3 * t_mod, n * B / t_mod, fit_label(n, t_meas, t_mod)))
        tv, bv = g["rows"][ti]["variant"], g["rows"][bi]["variant"]
        t_mod_t = row_model(res, RATE, n, HOSTS, per_host, tv, "off", B)[0]
        t_mod_b = row_model(res, RATE, n, HOSTS, per_host, bv, "off", B)[0]
        if med[ti] is None or med[bi] is None:
            print("target: %s >= %.1fx %s: not built (model: %.2fx)"
                  % (R.vlabel(tv), least, R.vlabel(bv), t_mod_b / t_mod_t))
        else:
            ratio = med[ti] / med[bi]
            print("target: %s >= %.1fx %s: measured %.2fx, model %.2fx: %s"
                  % (R.vlabel(tv), least, R.vlabel(bv), ratio, t_mod_b / t_mod_t,
                     _verdict(ratio, least)))
    if res["acc"]:
        a, b = res["acc"]
        print("\n## final_acc after %d epochs (2 hosts x 1 rank, whole epochs, seed 1)"
              % o["acc_epochs"])
        for r in res["acc"]:
            print("%-18s %s" % (R.vlabel(r["variant"]), r["not_built"] and "not built: " +
                                r["not_built"] or "%.4f" % r["final_acc"]))
        if a["final_acc"] is not None and b["final_acc"] is not None:
            d = abs(b["final_acc"] - a["final_acc"])
            print("target: |final_acc(bf16) - final_acc(none)| <= %.3f: %.4f: %s"
                  % (ACC_BAND, d, "PASS" if d <= ACC_BAND else "FAIL"))
        else:
            print("target: |final_acc(bf16) - final_acc(none)| <= %.3f: not built" % ACC_BAND)
    if over:
        print("\n# n>cores: " + OVERSUBSCRIBED)
