"""Samples/s of each run of bench_train.sh (tfdist, its GEMM floor and the
PyTorch peers) as horizontal bars, from the JSON that
`TFDIST_BENCH_JSON=FILE.json benchmarks/train/bench_train.sh` writes; the PNG
goes beside it (FILE.png), or to --out. Needs matplotlib (Debian:
python3-matplotlib).
  /usr/bin/python3 benchmarks/train/plot_train.py results/bench_train.json"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import plotlib as P  # noqa: E402


def load(src):
    with open(src, encoding="utf-8") as f:
        doc = json.load(f)
    rows = [(r["label"], float(r["samples_per_s"]), r["key"]) for r in doc["rows"]]
    if not rows or any(v <= 0 for _, v, _ in rows):
        raise ValueError("no rows, or a rate that is not positive")
    return doc, rows


def main(argv):
    src, out = P.parse_args(argv, "plot_train.py")
    try:
        doc, rows = load(src)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"plot_train.py: error: {src}: not a bench_train.sh JSON file ({e})", file=sys.stderr)
        return 1
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    labels = [r[0] for r in rows][::-1]
    values = [r[1] for r in rows][::-1]
    # the peers in grey, tfdist in blue, the floor hatched: who is who at a glance
    colors = ["0.6" if k in ("torch1", "torch2", "ddp") else "tab:blue" for _, _, k in rows][::-1]
    bars = ax.barh(labels, values, color=colors)
    for b, k in zip(bars, [r[2] for r in rows][::-1]):
        if k == "floor":
            b.set_hatch("//")
            b.set_facecolor("white")
            b.set_edgecolor("tab:blue")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("samples/s (batch 50 per rank)")
    ax.set_xlim(0, max(values) * 1.18)
    ax.set_title(f"CPU training, {doc['cores']} cores, medians of {doc['rounds']} rounds "
                 f"(load {doc['load'].split()[0]})", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    P.save_png(fig, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
