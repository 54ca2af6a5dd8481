"""Multi-host runs on simulated hosts (network namespaces + bridge), started by
tfdistrun over the nsrsh agent, against one-host runs of the same job.

  test_netns.py 2host   2 hosts x 1 rank = 1 host x 2 ranks (final_acc, losses)
  test_netns.py 6rank   3 hosts x 2 ranks on 10 Gbit/s tbf links = 1 host x 6
                        ranks, on the ring back end; exact equality
  test_netns.py tfconfig  TF_CONFIG clusters, one plain process per host (no
                        mpirun), every task on the same port of its own host:
                        chief + 2 workers over the TCP ring = 1 host x 3 ranks
                        (ring); chief + worker + ps = 1 host x 2 ranks; exact

Exit 77 when not root or namespaces cannot be made. Everything is torn down
afterwards, on failure and on SIGTERM too."""
import json
import os
import subprocess
import sys
import tempfile

import launchutil as lu


def metric_rows(outputs):
    with open(os.path.join(outputs, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def compared_values(outputs):
    """The numbers two runs of one job must share bit for bit."""
    keep = ("loss", "validation_loss", "validation_acc", "training_acc", "final_acc")
    return [(r["name"], r["epoch"], r["value"]) for r in metric_rows(outputs) if r["name"] in keep]


def run_multihost(prefix, tmp, name, hosts, flags):
    out, logs = os.path.join(tmp, name + "-out"), os.path.join(tmp, name + "-logs")
    spec = ",".join("%sh%d:%d" % (prefix, i, s) for i, s in enumerate(hosts))
    lu.run([lu.SIMHOSTS, "exec", prefix, "h0", sys.executable, lu.TFDISTRUN,
            "-np", str(sum(hosts)), "-H", spec, "--network-interface", "eth1",
            "--rsh-agent", lu.NSRSH, "--tfdist", lu.TFDIST]
           + flags + ["--outputs", out, "--logs", logs], 120)
    return out, logs


def run_onehost(tmp, name, np_, flags):
    out, logs = os.path.join(tmp, name + "-out"), os.path.join(tmp, name + "-logs")
    lu.run(["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", lu.TFDIST]
           + flags + ["--outputs", out, "--logs", logs], 120)
    return out, logs


def check_same(a, b, what):
    va, vb = compared_values(a), compared_values(b)
    if not va or va != vb:
        raise AssertionError("%s differ:\n  %s\n  %s" % (what, va, vb))
    print("%s: identical (%d values, final_acc %.4f)" % (what, len(va), lu.final_acc(a)))


def check_hosts(outputs, want):
    got = [(r["host"], r["local_rank"]) for r in lu.run_ranks(outputs)]
    if got != want:
        raise AssertionError("ranks ran on %s, expected %s" % (got, want))


def test_2host(prefix, tmp, flags):
    lu.run([lu.SIMHOSTS, "up", prefix, "2"], 60)
    out, logs = run_multihost(prefix, tmp, "2host", [1, 1], flags)
    check_hosts(out, [(prefix + "h0", 0), (prefix + "h1", 0)])
    lu.check_rank_logs(logs, 2, 2)
    ref, _ = run_onehost(tmp, "1host", 2, flags)
    check_same(out, ref, "2 hosts x 1 rank vs 1 host x 2 ranks")
    if not lu.final_acc(out) > 0.3:
        raise AssertionError("final_acc %.4f: did not learn" % lu.final_acc(out))


def test_6rank(prefix, tmp, flags):
    lu.run([lu.SIMHOSTS, "up", prefix, "3", "10gbit"], 60)
    q = subprocess.run(["tc", "-n", prefix + "h1", "qdisc", "show", "dev", "eth1"],
                       capture_output=True, text=True).stdout
    if "tbf" not in q or "10Gbit" not in q:
        raise AssertionError("link not shaped: " + q)
    # --overlap fixed: auto decides per node's ranks, and per-layer reductions
    # group the ring's sums differently from one whole-buffer reduction.
    flags = flags + ["--allreduce", "ring", "--overlap", "on"]
    out, logs = run_multihost(prefix, tmp, "3host", [2, 2, 2], flags)
    check_hosts(out, [(prefix + "h%d" % (r // 2), r % 2) for r in range(6)])
    lu.check_rank_logs(logs, 6, 2)
    ref, _ = run_onehost(tmp, "1host6", 6, flags)
    check_same(out, ref, "3 hosts x 2 ranks vs 1 host x 6 ranks (--allreduce ring)")
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        if json.load(f)["allreduce"] != "ring":
            raise AssertionError("run.json does not record the ring back end")


def run_tf_cluster(prefix, tmp, name, kinds, flags, port=2222):
    """One task per simulated host, kinds[i] ("chief", "worker", "ps") on hi,
    each told its place by TF_CONFIG, all on the same port of their own host."""
    out, logs = os.path.join(tmp, name + "-out"), os.path.join(tmp, name + "-logs")
    cluster, tasks = {}, []
    for i, kind in enumerate(kinds):
        cluster.setdefault(kind, []).append("127.1.0.%d:%d" % (i + 1, port))
        tasks.append((i, kind, len(cluster[kind]) - 1))
    procs = []
    for i, kind, index in tasks:
        conf = json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
        cmd = ["timeout", "-k", "5", "120", lu.SIMHOSTS, "exec", prefix, "h%d" % i, "env",
               "TF_CONFIG=" + conf, lu.TFDIST] + flags + ["--outputs", out, "--logs", logs]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    failed = []
    for (i, kind, index), p in zip(tasks, procs):
        text, _ = p.communicate(timeout=140)
        sys.stdout.write("[%s %d on h%d] %s" % (kind, index, i, text))
        if p.returncode != 0:
            failed.append("%s %d exit %d" % (kind, index, p.returncode))
    if failed:
        raise AssertionError("TF_CONFIG cluster %s: %s" % (name, ", ".join(failed)))
    return out, logs


def test_tfconfig(prefix, tmp, flags):
    lu.run([lu.SIMHOSTS, "up", prefix, "3", "10gbit"], 60)
    flags = flags + ["--overlap", "on"]  # as above: the same reductions in both runs
    ring = flags + ["--allreduce", "ring"]
    out, logs = run_tf_cluster(prefix, tmp, "tf-ring", ["chief", "worker", "worker"], flags)
    check_hosts(out, [(prefix + "h%d" % r, 0) for r in range(3)])
    lu.check_rank_logs(logs, 3, 2)
    ref, _ = run_onehost(tmp, "1host3", 3, ring)
    check_same(out, ref, "TF_CONFIG chief + 2 workers on 3 hosts vs 1 host x 3 ranks (ring)")
    out, logs = run_tf_cluster(prefix, tmp, "tf-ps", ["chief", "worker", "ps"], flags)
    check_hosts(out, [(prefix + "h0", 0), (prefix + "h1", 0)])
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        cl = json.load(f).get("cluster", {})
    if cl.get("strategy") != "parameter_server":
        raise AssertionError("run.json cluster: %s" % cl)
    if not os.path.exists(os.path.join(logs, "ps-0.log")):
        raise AssertionError("no ps-0.log in %s" % logs)
    ref, _ = run_onehost(tmp, "1host2", 2, ring)
    check_same(out, ref, "TF_CONFIG chief + worker + ps on 3 hosts vs 1 host x 2 ranks (ring)")


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    tests = {"2host": test_2host, "6rank": test_6rank, "tfconfig": test_tfconfig}
    if which not in tests:
        print("usage: test_netns.py 2host|6rank|tfconfig", file=sys.stderr)
        return 2
    prefix = lu.prefix_for("tn" + which[0])
    lu.need_root_netns(prefix + "probe")
    lu.on_signals_exit()
    try:
        with tempfile.TemporaryDirectory(prefix="tfdist-netns.") as tmp:
            data = os.path.join(tmp, "data")
            lu.write_learnable_set(data, 5, 1200, 300)
            # --threads 1: the layouts compared differ in ranks per host, which
            # --threads auto would turn into other thread counts (other sums)
            flags = ["train", "--data-folder", data, "--epochs", "2", "--learning-rate", "0.05",
                     "--progress", "off", "--timeout", "60", "--threads", "1"]
            tests[which](prefix, tmp, flags)
    finally:
        subprocess.run([lu.SIMHOSTS, "down", prefix], check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if any(line.startswith(prefix) for line in left.splitlines()):
        print("teardown left namespaces behind:\n" + left, file=sys.stderr)
        return 1
    print("netns %s: all checks passed" % which)
    return 0


if __name__ == "__main__":
    sys.exit(main())
