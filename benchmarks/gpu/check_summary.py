"""Helpers of benchmarks/gpu/check.sh (standard library only).
  --metrics FILE   one run's metrics.jsonl -> `JSON {...}` (final_acc, losses, times)
  --results FILE   check.sh's results.jsonl -> the closing table, targets of issues 6 and 7"""
import argparse
import json
import sys

ACC_BAND = (0.874 - 0.01, 0.874 + 0.01)


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def metrics_json(path):
    rows = {}
    last_time = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["name"], {})[r["epoch"]] = r["value"]
            last_time[r["epoch"]] = max(last_time.get(r["epoch"], 0.0), r["time"])
    epochs = sorted(rows.get("loss", {}))
    out = {"epochs": len(epochs), "final_acc": rows.get("final_acc", {}).get(len(epochs)),
           "loss": [rows["loss"][e] for e in epochs],
           "val_acc": [rows["validation_acc"][e] for e in epochs],
           "steps_s": sum(rows["epoch_time_s"][e] for e in epochs),
           "samples_per_s": [rows["samples_per_s"][e] for e in epochs]}
    if len(epochs) >= 2:  # epoch 1's end is known, not its start: take epoch 2's length for it
        t = [last_time[e] for e in epochs]
        out["train_eval_s"] = (t[-1] - t[0]) + (t[1] - t[0])
    print("JSON " + json.dumps(out))


def load(path):
    steps, data = {}, {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "data" in r:
                data.setdefault(r["step"], []).append(r["data"])
            else:
                steps[r["step"]] = r
    return steps, data


def first(data, step, pred=lambda d: True):
    for d in data.get(step, []):
        if pred(d):
            return d
    return None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def table(path, elapsed):
    steps, data = load(path)
    lines = []
    add = lines.append
    def is_step(d):
        return d.get("bench") == "tfdist_step"

    # check.sh reruns the benchmark one step per launch when the chained run failed
    bench_step = "step_bench"
    bench = first(data, bench_step, is_step) or {}
    if "step_us" not in bench and first(data, "step_bench_chain1", is_step):
        bench_step = "step_bench_chain1"
        bench = first(data, bench_step, is_step)
    peer = first(data, "pytorch_peer", lambda d: d.get("bench") == "pytorch_mnist")
    peer_modes = {}
    for step in ("pytorch_peer", "pytorch_compile"):
        for d in data.get(step, []):
            if d.get("bench") == "pytorch_mnist_mode":
                peer_modes[d["mode"]] = d
    add(f"== tfdist GPU check on {bench.get('device', 'unknown GPU')} ({elapsed} s in all)")
    add(f"{'step':22s} {'rc':>4s} {'secs':>7s}")
    for name, r in steps.items():
        verdict = "ok" if r["rc"] == 0 else ("skip" if r["rc"] == 77 else "FAIL")
        add(f"{name:22s} {r['rc']:>4d} {r['secs']:>7.1f}  {verdict}  {r.get('note', '')}")
    def ran(step):  # a measure counts as met only when its step exited 0
        return steps.get(step, {}).get("rc") == 0

    bench_ok = ran(bench_step)
    us = bench.get("step_us")
    rows = []

    def row(what, value, target, met):
        rows.append((what, value, target, "-" if met is None else ("yes" if met else "NO")))

    if steps.get("fused_chain", {}).get("rc", 0) not in (0, 77):
        row("chained fused step (fused_chain)", "FAILED",
            "later steps: 1 per launch", False)
    chain = bench.get("chain", 1)
    kind = "op by op"
    if bench.get("fused", False):
        kind = f"fused, {chain} per launch" if chain > 1 else "fused"
    row(f"step, batch 50 ({kind}, graph)", fmt(us, ".1f") + " us", "<= 40 us",
        bench_ok and us is not None and us <= 40)
    sps = bench.get("samples_per_s")
    row("samples/s, batch 50", fmt(sps, ",.0f"), ">= 1.25M", bench_ok and sps is not None and sps >= 1.25e6)
    for mode, label, target in (("eager", "PyTorch eager", 5.0), ("compile", "torch.compile", None),
                                ("cudagraph", "PyTorch CUDA graph", None)):
        m = peer_modes.get(mode, {})
        if "step_us" in m and us:
            ratio = m["step_us"] / us
            row(f"vs {label} ({m['step_us']:.1f} us)", f"{ratio:.2f}x",
                f">= {target:g}x" if target else "report",
                (bench_ok and ratio >= target) if target else None)
        else:
            row(f"vs {label}", "n/a", m.get("error", "did not run")[:28], False if target else None)
    one = "fused, 1 step per launch" if bench.get("fused", False) else "default (not fused)"
    for key, label in (("fused_one_us", f"tfdist {one}, graph"),
                       ("fused_eager_us", f"tfdist {one}, eager"),
                       ("ops_us", "tfdist op by op, graph (GEMMs auto)"),
                       ("small_us", "tfdist op by op, small GEMM kernels"),
                       ("eager_us", "tfdist op by op, eager"), ("unfused_us", "tfdist cuBLAS+cuDNN act"),
                       ("tf32_us", "tfdist cuBLAS tf32")):
        if key in bench:
            row(label, f"{bench[key]:.1f} us" if bench[key] > 0 else "FAILED", "report", None)
    t20 = first(data, "train20_gpu")
    if t20:
        te = t20.get("train_eval_s")
        ok = ran("train20_gpu")
        row("20 epochs incl. eval", fmt(te, ".2f") + " s", "< 3 s", ok and te is not None and te < 3.0)
        fa = t20.get("final_acc")
        row("final_acc, 20 epochs", fmt(fa, ".4f"), "0.874 +- 0.01",
            ok and fa is not None and ACC_BAND[0] <= fa <= ACC_BAND[1])
    else:
        row("20 epochs on the GPU", "n/a", "< 3 s, acc 0.874 +- 0.01", False)
    t20o = first(data, "train20_gpu_ops")
    if t20o:
        row("20 epochs, op by op (--fused-step off)", fmt(t20o.get("train_eval_s"), ".2f") + " s",
            f"acc {fmt(t20o.get('final_acc'), '.4f')}", None)
    if "fused_floor_us" in bench:
        bar = bench.get("chain_barrier_floor_us", bench["barrier_floor_us"])
        row(f"fused floor (barriers {bar:.1f} us/step + bytes)",
            f"{bench['fused_floor_us']:.1f} us", f"gap {bench['fused_gap']:.2f}x", None)
    if "floor_us" in bench:
        row(f"op floor ({bench['nodes']} nodes x {bench['node_latency_us']:.2f} us + bytes)",
            f"{bench['floor_us']:.1f} us", f"gap {bench['gap']:.2f}x (op by op)", None)
    if "big_step_us" in bench:
        row(f"batch {bench['big_batch']}: samples/s", f"{bench['big_samples_per_s']:,.0f}",
            f"{100 * bench['roofline_frac']:.0f}% of cuBLAS-only GEMMs "
            f"({bench['gemm_tflops']:.1f} TFLOP/s)", None)
    for step, label in (("nccl_1rank", "NCCL 1 rank"), ("ring_2rank_1gpu", "ring 2 ranks 1 GPU")):
        d = first(data, step, lambda d: d.get("bench") == "allreduce")
        if d:
            grads = [r for r in d["rows"] if r[0] == 266610 * 4]
            big = max(d["rows"], key=lambda r: r[0])
            g = f"{grads[0][1]:.1f} us" if grads else "n/a"
            row(f"{label}: 1.07 MB grads / {big[0] >> 20} MiB", f"{g} / {big[2]:.1f} GB/s",
                "#wrong 0, rc 0", ran(step) and d.get("wrong", 1) == 0)
        else:
            row(label, "n/a", "did not run", False)
    if "test_nccl" in steps:
        row("NCCL via collective/ (test_nccl_allreduce)", "exact" if ran("test_nccl") else "FAILED",
            "sum exact, avg 1 rounding", ran("test_nccl"))
    c2 = first(data, "ring2_cpu_train")
    for step, label in (("ring2_gpu_train", "2 ranks 1 GPU (ring) vs CPU"),
                        ("ps_gpu_train", "TF_CONFIG + 1 ps on the GPU vs CPU")):
        g2 = first(data, step)
        if g2 and c2:
            dl = max(abs(a - b) / abs(b) for a, b in zip(g2["loss"], c2["loss"]))
            da = max(abs(a - b) for a, b in zip(g2["val_acc"], c2["val_acc"]))
            row(label, f"loss {dl:.1e} rel, acc {da:.4f}", "<= 1e-3, <= 0.005",
                ran(step) and ran("ring2_cpu_train") and dl <= 1e-3 and da <= 0.005)
        else:
            row(label, "n/a", "did not run", False)
    if peer and "train" in peer:
        t = peer["train"]
        row(f"PyTorch {t['mode']} {t['epochs']} epochs", f"{t['seconds']:.2f} s",
            f"acc {t['final_acc']:.4f}", None)
    add("")
    add(f"{'measure':44s} {'value':>26s}  {'target':28s} met")
    for what, value, target, met in rows:
        add(f"{what:44s} {value:>26s}  {target:28s} {met}")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--metrics")
    ap.add_argument("--results")
    ap.add_argument("--elapsed", default="?")
    a = ap.parse_args()
    if a.metrics:
        metrics_json(a.metrics)
    if a.results:
        table(a.results, a.elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
