"""samples/s and efficiency against ranks, measured (solid, markers) and
modelled (dashed), one colour per link rate and variant (--allreduce,
--compression, K) and one panel row per overlap option, from the JSON that
`scaling.py --json FILE.json` writes (a sweep, not --issue17); the PNG goes
beside it (FILE.png), or to --out. The model is scaling.py's own
(scaling_model.row_model at the nominal link rate, the probe's alpha and the
measured node-local phase). Rows that were not built are left out. Older
files (one --allreduce name, runs keyed "ranks/overlap") still plot. Needs
matplotlib (Debian: python3-matplotlib).
  /usr/bin/python3 benchmarks/scaling/plot_scaling.py scaling.json"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import plotlib as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import scaling_model as M  # noqa: E402
import scaling_run as R  # noqa: E402


def variants(o):
    """[(label, variant, run key suffix)]; the old format had one back end and no suffix."""
    if isinstance(o["allreduce"], str):
        return [(o["allreduce"], {"allreduce": o["allreduce"], "compression": "none", "k": 1}, "")]
    return [(R.vlabel(v), v, "/" + R.vkey(v))
            for v in ({"allreduce": a, "compression": c, "k": k} for a in o["allreduce"]
                      for c in o.get("compression", ["none"]) for k in o.get("bpps", [1]))]


def curves(res):
    """{(rate, variant label, overlap): (ranks, measured sps, model sps)} and the 1-rank samples/s."""
    o = res["options"]
    B = o["batch_size"]
    sps1 = res["base"]["samples_per_s"] if res.get("base") else B / res["tc_s"]["1"]
    out = {}
    for rate in o["rates"]:
        rr = res["rates"][rate]
        for label, v, suffix in variants(o):
            for ov in o["overlap"]:
                ns, meas, mod = [1], [sps1], [sps1]
                for n in o["ranks"]:
                    if n == 1:
                        continue
                    m = rr["runs"]["%d/%s%s" % (n, ov, suffix)]
                    if "not_built" in m:
                        continue
                    _, hosts, per_host = R.placement("x", o["hosts"], n)
                    t = M.row_model(res, rate, n, hosts, per_host, v, ov, B)[0]
                    ns.append(n)
                    meas.append(m["samples_per_s"])
                    mod.append(n * B / t)
                if len(ns) > 1:
                    out[(rate, label, ov)] = (ns, meas, mod)
    return out, sps1


def main(argv):
    src, out = P.parse_args(argv, "plot_scaling.py")
    try:
        with open(src, encoding="utf-8") as f:
            res = json.load(f)
        data, sps1 = curves(res)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        print(f"plot_scaling.py: error: {src}: not a scaling.py --json file ({e})", file=sys.stderr)
        return 1
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    o = res["options"]
    fig, axes = plt.subplots(len(o["overlap"]), 2, figsize=(10, 3.6 * len(o["overlap"])),
                             dpi=100, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, ov in enumerate(o["overlap"]):
        ax_sps, ax_eff = axes[row]
        keys = [k for k in data if k[2] == ov]
        for i, (rate, label, _) in enumerate(keys):
            ns, meas, mod = data[(rate, label, ov)]
            c = colours[i % len(colours)]
            name = rate if len(variants(o)) == 1 else f"{rate} {label}"
            ax_sps.plot(ns, meas, "o-", color=c, label=f"{name} measured")
            ax_sps.plot(ns, mod, "--", color=c, label=f"{name} model")
            ax_eff.plot(ns, [100 * v / (n * sps1) for n, v in zip(ns, meas)], "o-", color=c,
                        label=f"{name} measured")
            ax_eff.plot(ns, [100 * v / (n * sps1) for n, v in zip(ns, mod)], "--", color=c,
                        label=f"{name} model")
        ax_sps.set_title(f"samples/s, --overlap {ov}")
        ax_eff.set_title(f"efficiency, --overlap {ov}")
        ax_sps.set_ylabel("samples/s")
        ax_eff.set_ylabel("efficiency (%)")
        for ax in (ax_sps, ax_eff):
            ax.set_xlabel("ranks")
            ax.set_xticks(sorted({1, *o["ranks"]}))
            ax.grid(True, alpha=0.3)
        ax_eff.set_ylim(bottom=0)
        ax_sps.legend(fontsize=7)
    ar = o["allreduce"] if isinstance(o["allreduce"], str) else ",".join(o["allreduce"])
    fig.suptitle(f"tfdist on {o['hosts']} simulated hosts, --allreduce {ar}, batch "
                 f"{o['batch_size']}/rank (model: scaling.py)", fontsize=10)
    fig.tight_layout()
    P.save_png(fig, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
