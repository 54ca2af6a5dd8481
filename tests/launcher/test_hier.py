"""--allreduce hier on 2 simulated hosts (network namespaces, launcher/netns):

  test_hier.py exact   the exact allreduce test (tests/collective/test_allreduce.c)
                       on 2 hosts x 1 and 2 hosts x 2 ranks, and 2 + 1 ranks (hosts
                       of different sizes), started by tfdistrun
  test_hier.py equiv   hier 2 hosts x 2 ranks x batch 25 = 1 rank x 100 after 30
                       steps (max |dw| <= 1e-6, h5py); a TF_CONFIG cluster of 2
                       tasks on each host gives the MPI run's weights bit for bit;
                       a repeat of the MPI run too, and its copying path
                       (--shared-gradients off; the MPI run's gradients are in
                       the node's segment, the rank logs say)
  test_hier.py kill    a rank of the second host killed (SIGKILL) mid-run under
                       mpirun (--allreduce auto, which picks hier across hosts:
                       the rank log says so), the same rank stalled (a test
                       fault: the --timeout watchdog names it), and a task of
                       the second host of a TF_CONFIG cluster killed: the job
                       ends within a bound, non-zero, naming the rank (task)

Nothing of ours may be left in /dev/shm after each. Exit 77 when not root or
namespaces cannot be made; everything is torn down afterwards."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import launchutil as lu
import tfdtest as T

TOL = 1e-6
STEPS = 30
TIMEOUT_S = 5
LIMIT_S = TIMEOUT_S + 25  # after the kill: the watchdog, the notices, mpirun's teardown
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1")


def shm_entries():
    return {e for e in os.listdir("/dev/shm") if e.startswith("tfdist-shm.")}


def check_shm_clean(before, what):
    left = shm_entries() - before
    if left:
        raise AssertionError("%s left in /dev/shm: %s" % (what, sorted(left)))


def tfdistrun(prefix, hosts, cmd):
    spec = ",".join("%sh%d:%d" % (prefix, i, s) for i, s in enumerate(hosts))
    return [lu.SIMHOSTS, "exec", prefix, "h0", sys.executable, lu.TFDISTRUN, "-np",
            str(sum(hosts)), "-H", spec, "--network-interface", "eth1", "--rsh-agent", lu.NSRSH,
            "--tfdist", lu.TFDIST] + cmd


def weights(outputs):
    return T.tensors(os.path.join(outputs, "model", "model.h5"))


def train_flags(data, tmp, name, batch, extra):
    return ["train", "--data-folder", data, "--epochs", "1", "--max-steps", str(STEPS),
            "--seed", "7", "--learning-rate", "0.05", "--batch-size", str(batch),
            "--progress", "off", "--threads", "1", "--timeout", "60", "--checkpoint-every", "0",
            "--outputs", os.path.join(tmp, name + "-out"), "--logs",
            os.path.join(tmp, name + "-logs")] + extra


def test_exact(prefix, tmp, data):
    before = shm_entries()
    lu.run([lu.SIMHOSTS, "up", prefix, "2"], 60)
    prog = os.path.join(os.path.dirname(lu.TFDIST), "..", "tests", "collective", "test_allreduce")
    for hosts in ([1, 1], [2, 2], [2, 1]):  # [2, 1]: the first host's rank 1 owns no slice
        out = lu.run(tfdistrun(prefix, hosts, [os.path.abspath(prog), "hier"]), 100)
        want = "hier, %d rank(s), %d on rank 0's node: all exact" % (sum(hosts), hosts[0])
        if want not in out:
            raise AssertionError("no '%s' line" % want)
        print("2 hosts, %s rank(s): %s" % (hosts, want))
        check_shm_clean(before, "hier on 2 hosts, %s rank(s)" % hosts)


def start_tf_cluster(prefix, tmp, name, per_host, flags):
    """per_host training tasks on each of 2 simulated hosts (chief first),
    ports 2222, 2223, ... on each host's address."""
    cluster, tasks = {}, []
    for h in range(2):
        for k in range(per_host):
            kind = "chief" if not cluster else "worker"
            cluster.setdefault(kind, []).append("127.1.0.%d:%d" % (h + 1, 2222 + k))
            tasks.append((h, kind, len(cluster[kind]) - 1))
    procs = []
    for h, kind, index in tasks:
        conf = json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
        cmd = ["timeout", "-k", "5", "120", lu.SIMHOSTS, "exec", prefix, "h%d" % h, "env",
               "TF_CONFIG=" + conf, lu.TFDIST] + flags
        procs.append(("%s %d on h%d" % (kind, index, h),
                      subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)))
    return procs


def test_equiv(prefix, tmp, data):
    before = shm_entries()
    lu.run([lu.SIMHOSTS, "up", prefix, "2"], 60)
    hier = ["--allreduce", "hier", "--overlap", "on"]
    lu.run(tfdistrun(prefix, [2, 2], train_flags(data, tmp, "hier", 25, hier)), 120)
    lu.run(tfdistrun(prefix, [2, 2], train_flags(data, tmp, "hier-b", 25, hier)), 120)
    copying = hier + ["--shared-gradients", "off"]  # private gradients: the copying path
    lu.run(tfdistrun(prefix, [2, 2], train_flags(data, tmp, "hier-copy", 25, copying)), 120)
    for r in range(4):
        with open(os.path.join(tmp, "hier-logs", "rank-%d.log" % r), encoding="utf-8") as f:
            if "gradients: in the comm's shared segment" not in f.read():
                raise AssertionError("rank %d of the hier run does not say zero copy" % r)
    lu.run(["mpirun", "-np", "1", lu.TFDIST] + train_flags(data, tmp, "n1", 100, []), 120)
    with open(os.path.join(tmp, "hier-out", "run.json"), encoding="utf-8") as f:
        if json.load(f)["allreduce"] != "hier":
            raise AssertionError("run.json does not record hier")
    w, ref = weights(os.path.join(tmp, "hier-out")), weights(os.path.join(tmp, "n1-out"))
    if not np.any(ref["dense_2/bias:0"]):
        raise AssertionError("the biases are still zero: nothing trained")
    d = T.max_abs_diff(ref, w)
    print("hier 2 hosts x 2 ranks x 25 vs 1 rank x 100 after %d steps: max |dw| = %.3g" % (STEPS, d))
    if not d <= TOL:
        raise AssertionError("max |dw| %.3g > %g" % (d, TOL))
    if not T.bits_equal(w, weights(os.path.join(tmp, "hier-b-out"))):
        raise AssertionError("a repeat of the hier run gave other weights")
    print("hier repeat: bit-identical")
    if not T.bits_equal(w, weights(os.path.join(tmp, "hier-copy-out"))):
        raise AssertionError("hier's copying path (--shared-gradients off) gave other weights")
    print("hier zero copy = copying path (--shared-gradients off): bit-identical")
    flags = train_flags(data, tmp, "tf", 25, hier)
    failed = []
    for name, p in start_tf_cluster(prefix, tmp, "tf", 2, flags):
        text, _ = p.communicate(timeout=140)
        sys.stdout.write("[%s] %s" % (name, text[-2000:]))
        if p.returncode != 0:
            failed.append("%s exit %d" % (name, p.returncode))
    if failed:
        raise AssertionError("TF_CONFIG cluster: " + ", ".join(failed))
    with open(os.path.join(tmp, "tf-out", "run.json"), encoding="utf-8") as f:
        if json.load(f)["allreduce"] != "hier":
            raise AssertionError("the TF_CONFIG run.json does not record hier")
    if not T.bits_equal(w, weights(os.path.join(tmp, "tf-out"))):
        d = T.max_abs_diff(w, weights(os.path.join(tmp, "tf-out")))
        raise AssertionError("TF_CONFIG hier differs from the MPI run: max |dw| %.3g" % d)
    print("TF_CONFIG 2 hosts x 2 tasks, hier: the MPI run's weights, bit for bit")
    check_shm_clean(before, "the hier runs")


def rank_pid(marker, rank):
    """The tfdist of MPI rank `rank` whose command line holds marker."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % d, "rb") as f:
                if f.read().strip() != b"tfdist":
                    continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open("/proc/%s/environ" % d, "rb") as f:
                if b"OMPI_COMM_WORLD_RANK=%d" % rank in f.read().split(b"\0"):
                    return int(d)
        except OSError:
            continue
    return None


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def long_flags(data, tmp, name, extra):
    return ["train", "--data-folder", data, "--epochs", "400", "--batch-size", "10",
            "--progress", "off", "--threads", "1", "--timeout", str(TIMEOUT_S),
            "--checkpoint-every", "0", "--outputs", os.path.join(tmp, name + "-out"),
            "--logs", os.path.join(tmp, name + "-logs")] + extra


def kill_after_epoch1(procs, log, find_pid, limit_s=60):
    T.wait_for(lambda: "epoch   1/" in read(log) or any(p.poll() is not None for p in procs),
             limit_s, "epoch 1 in " + log)
    if any(p.poll() is not None for p in procs):
        raise AssertionError("the job ended before the kill")
    time.sleep(0.3)
    pid = find_pid()
    if pid is None:
        raise AssertionError("no pid for the victim")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return t0


def kill_rank3(prefix, tmp, data, name):
    """A 2 x 2 mpirun job whose rank 3 is killed after epoch 1: (output, exit,
    seconds after the kill, the line naming rank 3 or None, the logs folder)."""
    cmd = ["timeout", "-k", "5", "150"] + tfdistrun(prefix, [2, 2], long_flags(data, tmp, name, []))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    logs = os.path.join(tmp, name + "-logs")
    t0 = kill_after_epoch1([p], os.path.join(logs, "rank-3.log"),
                           lambda: rank_pid(os.path.join(tmp, name + "-out"), 3))
    out, _ = p.communicate(timeout=LIMIT_S + 60)
    took = time.monotonic() - t0
    named = re.search(r"process rank 3 with PID|missing rank\(s\) 3\b|rank 3 \(pid \d+\) died|"
                      r"stalled rank\(s\) 3\b|rank 3 failed", out)
    print("%s: exit %d %.1f s after the kill; %s" % (name, p.returncode, took,
                                                    named.group(0) if named else "not named"))
    return out, p.returncode, took, named, logs


def test_kill(prefix, tmp, data):
    before = shm_entries()
    lu.run([lu.SIMHOSTS, "up", prefix, "2"], 60)
    # mpirun: rank 3 (second host) of 2 x 2, --allreduce auto. Open MPI 4.1.4's
    # mpirun itself sometimes dies (SIGSEGV in pmix_server_log_fn, relaying a
    # rank's help message while it tears the job down, before any rank has
    # printed): that run says nothing of tfdist, so it is run once more.
    for attempt in (1, 2):
        name = "kill-mpi" if attempt == 1 else "kill-mpi-again"
        out, rc, took, named, logs = kill_rank3(prefix, tmp, data, name)
        upstream = rc == 139 and "pmix_server_log_fn" in out and "tfdist: error" not in out
        if attempt == 1 and upstream:
            print("%s: mpirun crashed in pmix_server_log_fn (Open MPI); once more" % name)
            continue
        break
    for r in range(4):
        if "allreduce: hier (auto: CPU, ranks on more than one node" not in read(
                os.path.join(logs, "rank-%d.log" % r)):
            raise AssertionError("rank-%d.log does not say auto picked hier:\n%s"
                                 % (r, read(os.path.join(logs, "rank-%d.log" % r))))
    if rc == 0 or took > LIMIT_S or not named:
        raise AssertionError("%s: exit %d after %.1f s (limit %d), rank 3 named: %s\n%s"
                             % (name, rc, took, LIMIT_S, bool(named), out[-3000:]))
    check_shm_clean(before, name)
    # mpirun: rank 3 stalls (a test fault): the --timeout watchdog names it
    name = "stall-mpi"
    t0 = time.monotonic()
    cmd = ["timeout", "-k", "5", "150", "env", "TFDIST_FAULT_STALL_RANK=3",
           "TFDIST_FAULT_STALL_STEP=5"] + tfdistrun(prefix, [2, 2], [
               "-x", "TFDIST_FAULT_STALL_RANK", "-x", "TFDIST_FAULT_STALL_STEP"]
               + long_flags(data, tmp, name, ["--allreduce", "hier"]))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                       timeout=LIMIT_S + 90)
    took = time.monotonic() - t0
    named = re.search(r"allreduce\(hier.*stalled rank\(s\) 3 never reached it", r.stdout)
    print("%s: exit %d after %.1f s; %s" % (name, r.returncode, took,
                                           named.group(0) if named else "not named"))
    if r.returncode == 0 or not named or took > LIMIT_S + 30:  # + start-up and 5 steps
        raise AssertionError("%s: exit %d after %.1f s, named: %s\n%s"
                             % (name, r.returncode, took, bool(named), r.stdout[-3000:]))
    check_shm_clean(before, name)
    # TF_CONFIG: worker 2 (rank 3, the second host) of 2 x 2
    name = "kill-tf"
    procs = start_tf_cluster(prefix, tmp, name, 2, long_flags(data, tmp, name, ["--allreduce", "hier"]))
    victim = procs[3][1]

    def victim_pid():
        try:
            with open("/proc/%d/task/%d/children" % (victim.pid, victim.pid)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            return None
        # timeout -> simhosts (exec: unshare -> sh -> exec) -> env -> tfdist
        while kids:
            pid = kids[0]
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "tfdist":
                    return pid
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = [int(k) for k in f.read().split()]
        return None

    t0 = kill_after_epoch1([q for _, q in procs], os.path.join(tmp, name + "-logs", "rank-0.log"),
                           victim_pid)
    said, ends = "", []
    for tname, q in procs[:3]:
        text, _ = q.communicate(timeout=LIMIT_S + 60)
        ends.append("%s exit %d after %.1f s" % (tname, q.returncode, time.monotonic() - t0))
        if tname.startswith("chief"):
            said = text
        if q.returncode == 0 or time.monotonic() - t0 > LIMIT_S:
            raise AssertionError("%s: %s\n%s" % (name, ends[-1], text[-2000:]))
    procs[3][1].communicate(timeout=30)
    said += read(os.path.join(tmp, name + "-logs", "rank-0.log"))
    hit = re.search(r".*(worker 2|rank 3)\b.*", said)
    print("%s: %s; named: %s" % (name, "; ".join(ends), hit.group(0).strip() if hit else None))
    if not hit:
        raise AssertionError("%s: the chief does not name worker 2 (rank 3):\n%s" % (name, said[-3000:]))
    check_shm_clean(before, name)


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    tests = {"exact": test_exact, "equiv": test_equiv, "kill": test_kill}
    if which not in tests:
        print("usage: test_hier.py exact|equiv|kill", file=sys.stderr)
        return 2
    prefix = lu.prefix_for("th" + which[0])
    lu.need_root_netns(prefix + "probe")
    lu.on_signals_exit()
    try:
        with tempfile.TemporaryDirectory(prefix="tfdist-hier.") as tmp:
            data = os.path.join(tmp, "data")
            lu.write_learnable_set(data, 5, 3000, 300)  # 30 steps of 100
            tests[which](prefix, tmp, data)
    finally:
        subprocess.run([lu.SIMHOSTS, "down", prefix], check=False)
    print("hier %s: all checks passed" % which)
    return 0


if __name__ == "__main__":
    sys.exit(main())
