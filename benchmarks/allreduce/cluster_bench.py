#!/usr/bin/python3
"""Training throughput of TF_CONFIG clusters on one machine: tfdist's TCP
ring (chief + workers), tfdist's parameter-server strategy (+ --ps ps tasks),
tfdist under mpirun (ring over MPI), and the peer, PyTorch DDP over gloo
(benchmarks/peers/pytorch_ddp.py), all with --ranks training processes,
--batch-size per rank, one BLAS/torch thread each, on the same data.

Configurations are interleaved within each repeat, so load drifts hit all
alike; the median over --repeat is reported, with the ratio to the peer.
tfdist's figure is rank 0's best epoch `samples_per_s` (the epoch's steps
only) over 2 epochs of --steps steps; the peer's times --steps steps after
50 warm-up steps. Both count global samples.

usage: cluster_bench.py [--tfdist PATH] [--ranks 2] [--ps 1] [--batch-size 50]
                        [--steps 400] [--overlap on|off] [--repeat 3] [--data-folder DIR]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_scaling  # noqa: E402  (its metrics reader)

PEER = os.path.join(HERE, "..", "peers", "pytorch_ddp.py")


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train_args(a, folder):
    return [a.tfdist, "train", "--data-folder", a.data_folder, "--epochs", "2",
            "--max-steps", str(a.steps), "--batch-size", str(a.batch_size), "--threads", "1",
            "--outputs", os.path.join(folder, "outputs"), "--logs", os.path.join(folder, "logs"),
            "--progress", "off", "--checkpoint-every", "0", "--overlap", a.overlap]


def best_rate(folder):
    return train_scaling.best_rate(os.path.join(folder, "outputs"))


def wait_all(procs, what, limit):
    for p in procs:
        try:
            out, _ = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            sys.exit("cluster_bench: %s did not finish in %d s" % (what, limit))
        if p.returncode != 0:
            for q in procs:
                q.kill()
            sys.exit("cluster_bench: %s failed (exit %d):\n%s" % (what, p.returncode, out[-2000:]))


def run_cluster(a, folder, nps):
    ports = free_ports(a.ranks + nps)
    addr = ["127.0.0.1:%d" % p for p in ports]
    cluster = {"chief": addr[:1], "worker": addr[1:a.ranks]}
    if nps:
        cluster["ps"] = addr[a.ranks:]
    tasks = [("chief", 0)] + [("worker", i) for i in range(a.ranks - 1)] + \
            [("ps", i) for i in range(nps)]
    procs = []
    for kind, i in tasks:
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": kind, "index": i}}))
        procs.append(subprocess.Popen(train_args(a, folder), env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    wait_all(procs, "the TF_CONFIG cluster (%d ps)" % nps, a.limit)
    return best_rate(folder)


def run_mpirun(a, folder):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(a.ranks)] + \
        train_args(a, folder) + ["--allreduce", "ring"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_all([p], "mpirun", a.limit)
    return best_rate(folder)


def run_peer(a):
    port = free_ports(1)[0]
    procs = [subprocess.Popen([sys.executable, PEER, "--rank", str(r), "--world", str(a.ranks),
                               "--port", str(port), "--data-folder", a.data_folder,
                               "--batch", str(a.batch_size), "--steps", str(a.steps)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(a.ranks)]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=a.limit)
        if p.returncode != 0:
            sys.exit("cluster_bench: the PyTorch peer failed:\n%s" % out[-2000:])
        outs.append(out)
    for line in outs[0].splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])["samples_per_s"]
    sys.exit("cluster_bench: no JSON line from the peer:\n%s" % outs[0][-2000:])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--tfdist", default=os.environ.get("TFDIST", os.path.join(
        HERE, "..", "..", "build", "cli", "tfdist")))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--ps", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--overlap", default="on", choices=["on", "off"],
                    help="tfdist's --overlap (on: its default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=300, help="seconds per run before it is killed")
    a = ap.parse_args()
    if a.ranks < 1 or a.ps < 0 or a.steps < 1 or a.repeat < 1:
        ap.error("--ranks, --steps and --repeat must be >= 1, --ps >= 0")
    configs = [("tfdist TF_CONFIG, TCP ring", lambda d: run_cluster(a, d, 0)),
               ("tfdist TF_CONFIG, %d ps" % a.ps, lambda d: run_cluster(a, d, a.ps)),
               ("tfdist mpirun, ring", lambda d: run_mpirun(a, d)),
               ("PyTorch DDP, gloo (peer)", lambda d: run_peer(a))]
    if a.ps == 0:
        configs.pop(1)
    results = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            for k, (name, fn) in enumerate(configs):
                # progress on stderr: a whole benchmark takes minutes
                print("[repeat %d/%d] %s" % (rep + 1, a.repeat, name), file=sys.stderr, flush=True)
                results[name].append(fn(os.path.join(tmp, "r%d-c%d" % (rep, k))))
    peer = statistics.median(results[configs[-1][0]])
    print("# %d training processes, batch %d per rank, %d steps, 1 thread each, tfdist --overlap "
          "%s, median of %d; %d core(s)" % (a.ranks, a.batch_size, a.steps, a.overlap, a.repeat,
                                           os.cpu_count()))
    print("# %-28s %12s %10s   %s" % ("configuration", "samples/s", "vs peer", "runs"))
    for name, _ in configs:
        med = statistics.median(results[name])
        runs = " ".join("%.0f" % v for v in results[name])
        print("  %-28s %12.0f %9.2fx   %s" % (name, med, med / peer, runs))


if __name__ == "__main__":
    main()
