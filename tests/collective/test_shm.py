"""--allreduce shm under real mpirun: equivalence (2 ranks x 50 with shm
against 1 rank x 100 after 30 steps, max |dw| <= 1e-6, and a repeat
bit-identical); failure (kill -9 of one rank of 2 and of 4: a bounded
non-zero exit naming the rank; a stalled rank named by the watchdog within
--timeout), with nothing of ours left in /dev/shm after each; and two jobs at
once on this node giving the weights each gives alone. The shm runs keep
their gradients in the comm's segment (coll_comm_buffer; the rank log says). And the defaults:
--allreduce auto takes shm on CPUs when every rank is on this node, and
--overlap auto turns overlap on only where usable cores exceed the local
ranks' compute threads; the rank log says what was chosen and why."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

import mpitest

TOL = 1e-6
STEPS = 30
TIMEOUT_S = 5
DIAG_S = 3
SLACK_S = 6


def train_args(np_, batch, backend, overlap, seed="7"):
    return ["--epochs", "1", "--max-steps", str(STEPS), "--seed", seed, "--learning-rate", "0.05",
            "--batch-size", str(batch), "--allreduce", backend, "--overlap", overlap]


def equivalence(tmp, data):
    runs = [("n1", 1, 100, "ring", "on"), ("shm2", 2, 50, "shm", "on"),
            ("shm2b", 2, 50, "shm", "on"), ("shm2off", 2, 50, "shm", "off")]
    w, fails = {}, 0
    for name, np_, batch, backend, overlap in runs:
        folder = os.path.join(tmp, name)
        rc, out = mpitest.run_train(np_, folder, data, train_args(np_, batch, backend, overlap))
        if rc != 0:
            return mpitest.verdict(name, False, "exit %d" % rc, out)
        w[name] = mpitest.weights(folder)
    for r in (0, 1):  # backward wrote into the segment: the allreduce copied nothing
        log = rank_log(os.path.join(tmp, "shm2"), r)
        fails += mpitest.verdict("zero-copy rank %d" % r,
                                 "gradients: in the comm's shared segment" in log,
                                 "the rank log does not say so:\n" + log)
    if not np.any(w["n1"]["dense_2/bias:0"]):
        fails += mpitest.verdict("trained", False, "the biases are still zero")
    for name in ("shm2", "shm2off"):
        d = mpitest.max_abs_diff(w["n1"], w[name])
        print("%s vs n1 after %d steps: max |dw| = %.3g" % (name, STEPS, d))
        fails += mpitest.verdict("equivalence-" + name, d <= TOL, "%.3g > %g" % (d, TOL))
    for a, b in (("shm2", "shm2b"), ("shm2", "shm2off")):
        same = all(np.array_equal(w[a][k].view(np.uint32), w[b][k].view(np.uint32)) for k in w[a])
        fails += mpitest.verdict("bit-identical %s %s" % (a, b), same, "weights differ")
    return fails


def start(folder, data, np_, extra, env_extra):
    marker = uuid.uuid4().hex
    env = dict(os.environ, TFDIST_TEST_MARK=marker, **env_extra)
    fwd = []
    for k in ["TFDIST_TEST_MARK"] + list(env_extra):
        fwd += ["-x", k]
    cmd = mpitest.train_cmd(np_, folder, data, ["--epochs", "400", "--batch-size", "10",
                                                "--timeout", str(TIMEOUT_S), "--allreduce", "shm"]
                            + list(extra), fwd)
    log = open(folder + ".out", "w+")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), marker, log


def kill_case(tmp, data, np_, victim, before):
    name = "kill-9-np%d" % np_
    folder = os.path.join(tmp, name)
    p, marker, log = start(folder, data, np_, [], {})
    mpitest.wait_for(lambda: mpitest.epoch_logged(folder, victim) or p.poll() is not None, 60,
                     "epoch 1")
    time.sleep(0.3)
    pids = mpitest.rank_pids(marker, victim)
    if len(pids) != 1:
        p.kill()
        return mpitest.verdict(name, False, "found pids %s for rank %d" % (pids, victim))
    t0 = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    limit = TIMEOUT_S + DIAG_S + SLACK_S
    rc, elapsed, out = mpitest.finish(p, log, t0, limit)
    names = re.search(r"process rank %d with PID|missing rank\(s\) %d\b|rank %d \(pid \d+\) died"
                      % (victim, victim, victim), out)
    left = mpitest.shm_entries() - before
    print("%s: exit %d after %.1f s; %s; left in /dev/shm: %s" %
          (name, rc, elapsed, names.group(0) if names else "rank not named", sorted(left)))
    ok = rc != 0 and elapsed <= limit and names is not None and not left
    return mpitest.verdict(name, ok, "exit %d, %.1f s (limit %d), named: %s, left: %s" %
                           (rc, elapsed, limit, bool(names), sorted(left)), out)


def stall_case(tmp, data, np_, overlap, before):
    name = "stall-np%d-overlap-%s" % (np_, overlap)
    folder = os.path.join(tmp, name)
    env = {"TFDIST_FAULT_STALL_RANK": "1", "TFDIST_FAULT_STALL_STEP": "5"}
    t0 = time.monotonic()
    p, _, log = start(folder, data, np_, ["--overlap", overlap], env)
    limit = TIMEOUT_S + DIAG_S + SLACK_S + 5  # + start-up
    rc, elapsed, out = mpitest.finish(p, log, t0, limit)
    names = re.search(r"stalled rank\(s\) 1 never reached it", out)
    left = mpitest.shm_entries() - before
    lines = [l for l in out.splitlines() if l.startswith("tfdist: error:")]
    print("%s: exit %d after %.1f s; %s; left in /dev/shm: %s" %
          (name, rc, elapsed, lines[0] if lines else "no error line", sorted(left)))
    ok = rc != 0 and elapsed <= limit and names is not None and not left
    return mpitest.verdict(name, ok, "exit %d, %.1f s (limit %d), named: %s, left: %s" %
                           (rc, elapsed, limit, bool(names), sorted(left)), out)


def two_jobs(tmp, data):
    """Each job alone, then both at once: the same weights, bit for bit."""
    jobs = {"a": "7", "b": "8"}
    alone, fails = {}, 0
    for j, seed in jobs.items():
        folder = os.path.join(tmp, "alone-" + j)
        rc, out = mpitest.run_train(2, folder, data, train_args(2, 50, "shm", "on", seed))
        if rc != 0:
            return mpitest.verdict("alone-" + j, False, "exit %d" % rc, out)
        alone[j] = mpitest.weights(folder)
    procs = {}
    for j, seed in jobs.items():
        folder = os.path.join(tmp, "both-" + j)
        procs[j] = (folder, subprocess.Popen(
            mpitest.train_cmd(2, folder, data, train_args(2, 50, "shm", "on", seed)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for j, (folder, p) in procs.items():
        out, _ = p.communicate(timeout=130)
        if p.returncode != 0:
            fails += mpitest.verdict("both-" + j, False, "exit %d" % p.returncode, out)
            continue
        w = mpitest.weights(folder)
        same = all(np.array_equal(w[k].view(np.uint32), alone[j][k].view(np.uint32)) for k in w)
        fails += mpitest.verdict("two jobs at once: job %s as alone" % j, same, "weights differ")
    return fails


def rank_log(folder, rank):
    with open(os.path.join(folder, "logs", "rank-%d.log" % rank)) as f:
        return f.read()


def auto_case(tmp, data):
    cores = len(os.sched_getaffinity(0))
    fails = 0
    for np_, extra in ((1, []), (2, []), (4, []), (2, ["--overlap", "on"])):
        name = "auto-np%d%s" % (np_, "".join(extra))
        folder = os.path.join(tmp, name)
        rc, out = mpitest.run_train(np_, folder, data, ["--epochs", "1", "--max-steps", "3",
                                                        "--threads", "1"] + extra)
        if rc != 0:
            fails += mpitest.verdict(name, False, "exit %d" % rc, out)
            continue
        want_ar = "shm (auto: CPU, and every rank is on this node)" if np_ > 1 else "ring (auto: one rank)"
        on = cores > np_
        want_ov = None if extra else "%s (auto: %d usable cores %s %d compute threads of %d local rank(s))" % (
            "on" if on else "off", cores, ">" if on else "<=", np_, np_)
        for r in range(np_):
            log = rank_log(folder, r)
            ok = ("allreduce: " + want_ar) in log and (
                ("overlap: " + want_ov) in log if want_ov else "overlap: " not in log)
            why = "want 'allreduce: %s', overlap %s; log:\n%s" % (want_ar, want_ov, log)
            fails += mpitest.verdict("%s rank %d" % (name, r), ok, why)
    print("auto: %d usable cores" % cores)
    return fails


def main():
    before = mpitest.shm_entries()
    with tempfile.TemporaryDirectory() as tmp:
        data = mpitest.write_data(tmp)
        fails = auto_case(tmp, data)
        fails += equivalence(tmp, data)
        fails += two_jobs(tmp, data)
        fails += kill_case(tmp, data, 2, 1, before)
        fails += kill_case(tmp, data, 4, 2, before)
        fails += stall_case(tmp, data, 2, "off", before)
        fails += stall_case(tmp, data, 4, "on", before)
    left = mpitest.shm_entries() - before
    fails += mpitest.verdict("nothing left in /dev/shm", not left, "left: %s" % sorted(left))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
