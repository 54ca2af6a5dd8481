"""busbw against message size, one line per algorithm, from the JSON that
`allreduce -j FILE.json` writes; the PNG goes beside it (FILE.png), or to
--out. Needs matplotlib (Debian: python3-matplotlib).
  /usr/bin/python3 benchmarks/allreduce/plot_allreduce.py allreduce-2.json"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import plotlib as P  # noqa: E402


def main(argv):
    src, out = P.parse_args(argv, "plot_allreduce.py")
    try:
        with open(src, encoding="utf-8") as f:
            doc = json.load(f)
        rows = doc["rows"]
        algos = [k for k in rows[0] if k not in ("bytes", "count")]
        sizes = [r["bytes"] for r in rows]
        series = {a: [r[a]["busbw_gbs"] for r in rows] for a in algos}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        print(f"plot_allreduce.py: error: {src}: not an allreduce -j file ({e})", file=sys.stderr)
        return 1
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = {"ompi": "MPI_Allreduce (Open MPI)", "mpi": "tfdist mpi (MPI_Iallreduce)",
             "ring": "tfdist ring"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for a in algos:
        ax.plot(sizes, series[a], marker="o", markersize=3, label=names.get(a, a))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title(f"allreduce, float32 sum, {doc['ranks']} ranks on {doc['hosts']} host(s); "
                 f"median of {doc['iters']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    P.save_png(fig, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
