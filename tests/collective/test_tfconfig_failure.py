"""A task of a TF_CONFIG cluster dies mid-training (SIGKILL, after the chief
logged epoch 1 of a long run, --timeout 10): every other task must exit
non-zero within --timeout + 30 s of the kill, and when the dead task is not
the chief, the chief's stderr or what its rank-0.log gained after the kill
names it ("worker 1", "ps 0"). Cases: worker 1 of chief + 2 workers (ring);
ps 0 of chief + worker + 2 ps; the chief of chief + worker + 1 ps.
Stall: SIGSTOP of worker 0 (--timeout 5; a ring of 4, and with 1 ps): the
others end, and the chief names worker 0 as the one stalled, not the peer
it was waiting on.
Cancel: SIGTERM to worker 0's tfdist alone (chief + worker + 1 ps) is passed
on to the chief, which records the run as Canceled "(sent to rank 1)" and
exits 143 within a few seconds; the other tasks end too."""
import json
import os
import re
import signal
import sys
import tempfile
import time

import tfcluster as TC

TIMEOUT_S = 10
LIMIT_S = TIMEOUT_S + 30   # "every other task exits non-zero within timeout + 30 s"
EPOCH_WAIT_S = 40           # start-up and the first epoch


def chief_log(folder):
    return os.path.join(folder, "logs", "rank-0.log")


def kill_case(C, tmp, data, slug, name, spec, victim, named):
    folder = os.path.join(tmp, slug)  # no task name in the path: the messages are searched
    c = TC.Cluster(folder, spec)
    log = chief_log(folder)
    others, t_kill, offset, ok = [], time.monotonic(), 0, True
    args = TC.train_args(folder, data, ["--epochs", "1000", "--batch-size", "10", "--seed", "3",
                                        "--learning-rate", "0.01", "--timeout", str(TIMEOUT_S)])
    try:
        c.start(args, limit_s=EPOCH_WAIT_S + LIMIT_S + 30)
        t0 = time.monotonic()
        while time.monotonic() - t0 < EPOCH_WAIT_S:
            if re.search(r"epoch +1/", TC.read_text(log)) or any(t.poll() is not None for t in c.tasks):
                break
            time.sleep(0.05)
        logged = re.search(r"epoch +1/", TC.read_text(log)) is not None
        ok &= C.check(logged, "%s: the chief's rank-0.log showed no epoch 1 within %d s"
                      % (name, EPOCH_WAIT_S), c.summary())
        time.sleep(0.3)  # into the next epoch
        early = [t.name for t in c.tasks if t.poll() is not None]
        ok &= C.check(not early, "%s: %s ended before the kill" % (name, early), c.summary())
        offset = len(TC.read_text(log))
        v = c.task(*victim)
        t_kill = time.monotonic()
        v.kill()
        others = [t for t in c.tasks if t is not v]
        c.wait(LIMIT_S, others)
    finally:
        c.kill()
    for t in others:
        after = (t.ended_at - t_kill) if t.ended_at is not None else None
        ok &= C.check(after is not None and after <= LIMIT_S,
                      "%s: %s had not ended %d s after %s was killed" % (name, t.name, LIMIT_S, v.name),
                      c.summary())
        ok &= C.check(t.rc not in (0, None),
                      "%s: %s exit %s after %s was killed, want non-zero" % (name, t.name, t.rc, v.name))
    if named:
        chief = c.tasks[0] if c.tasks[0].kind == "chief" else c.task("worker", 0)
        said = chief.stderr() + "\n" + TC.read_text(log)[offset:]
        hit = [l for l in said.splitlines() if named in l]
        ok &= C.check(bool(hit), "%s: neither the chief's stderr nor its rank-0.log after the kill "
                      "names '%s'" % (name, named),
                      "  chief stderr: %s\n  rank-0.log after the kill: %s"
                      % (chief.stderr().strip()[-600:], TC.read_text(log)[offset:].strip()[-600:]))
    if ok:
        ends = "; ".join("%s exit %d after %.1f s" % (t.name, t.rc, t.ended_at - t_kill)
                         for t in others)
        C.ok("%s: %s%s" % (name, ends, "; named: %s" % hit[0].strip() if named else ""))


def tfdist_pid(task):
    """The tfdist process under the task's timeout wrapper (signalling the
    wrapper would pass a second signal on, which ends tfdist at once)."""
    try:
        with open("/proc/%d/task/%d/children" % (task.proc.pid, task.proc.pid)) as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return None
    return kids[0] if kids else None


def worker0_at_epoch1(C, c, data, name, timeout_s):
    """Starts c on a long run; worker 0's tfdist pid once the chief logged
    epoch 1, or None (a failed check)."""
    log = chief_log(c.folder)
    c.start(TC.train_args(c.folder, data, ["--epochs", "1000", "--batch-size", "10", "--seed", "3",
                                           "--timeout", str(timeout_s)]),
            limit_s=EPOCH_WAIT_S + LIMIT_S + 30)
    t0 = time.monotonic()
    while time.monotonic() - t0 < EPOCH_WAIT_S and not re.search(r"epoch +1/", TC.read_text(log)):
        if any(t.poll() is not None for t in c.tasks):
            break
        time.sleep(0.05)
    pid = tfdist_pid(c.task("worker", 0))
    if not C.check(pid is not None and re.search(r"epoch +1/", TC.read_text(log)),
                   "%s: the cluster did not reach epoch 1" % name, c.summary()):
        return None
    return pid


def cancel_case(C, tmp, data):
    name = "SIGTERM to worker 0 alone"
    folder = os.path.join(tmp, "cancel")
    c = TC.Cluster(folder, TC.cluster_spec(1, 1, 1))
    try:
        pid = worker0_at_epoch1(C, c, data, name, TIMEOUT_S)
        if pid is None:
            return
        t_sig = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        c.wait(LIMIT_S)
    finally:
        c.kill()
    chief = c.task("chief", 0)
    took = chief.ended_at - t_sig if chief.ended_at is not None else None
    C.check(chief.rc == 143 and took is not None and took < 15,
            "%s: the chief exit %s after %s s, want 143 within 15 s" % (name, chief.rc, took),
            c.summary())
    C.check("canceled by SIGTERM (sent to rank 1)" in chief.stderr(),
            "%s: the chief's stderr does not say who got the signal" % name, chief.stderr())
    try:
        status = json.load(open(os.path.join(folder, "outputs", "run.json"))).get("status")
    except (OSError, ValueError):
        status = None
    C.check(status == "Canceled", "%s: run.json status %s, want Canceled" % (name, status))
    for t in c.tasks[1:]:
        C.check(t.rc not in (0, None), "%s: %s exit %s, want non-zero" % (name, t.name, t.rc))
    # the signalled worker says it was stopped, and exits as a signalled command does
    w0 = c.task("worker", 0)
    C.check(w0.rc == 143 and "rank 1: stopped by SIGTERM, passed on to rank 0" in w0.stderr(),
            "%s: worker 0 exit %s, want 143 and a 'stopped by SIGTERM' line" % (name, w0.rc),
            w0.stderr())
    if chief.rc == 143 and status == "Canceled":
        C.ok("%s: the chief recorded Canceled and exit 143 after %.1f s" % (name, took))


def stall_case(C, tmp, data, slug, name, spec):
    """SIGSTOP worker 0's tfdist (--timeout 5): every other task ends, and the
    chief's error names worker 0 as the stalled one, not the neighbour it
    waited on."""
    c = TC.Cluster(os.path.join(tmp, slug), spec)
    try:
        pid = worker0_at_epoch1(C, c, data, name, 5)
        if pid is None:
            return
        v = c.task("worker", 0)
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        others = [t for t in c.tasks if t is not v]
        c.wait(5 + 25, others)
    finally:
        c.kill()
    late = [t.name for t in others if t.ended_at is None or t.ended_at - t_stop > 30]
    C.check(not late, "%s: %s still running 30 s after worker 0 stopped" % (name, late), c.summary())
    bad = [t.name for t in others if t.rc in (0, None)]
    C.check(not bad, "%s: %s did not fail" % (name, bad), c.summary())
    said = c.task("chief", 0).stderr()
    if C.check("worker 0" in said and "stalled or hung" in said and
               re.search(r"stalled or hung: worker 0|waiting for worker 0", said),
               "%s: the chief does not name worker 0 as stalled" % name, said.strip()[-800:]):
        C.ok("%s: chief: %s" % (name, said.strip().splitlines()[-1]))


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"), n_train=1200, n_test=200)
        kill_case(C, tmp, data, "kill-w", "kill worker 1 (ring)", TC.cluster_spec(1, 2, 0),
                  ("worker", 1), "worker 1")
        kill_case(C, tmp, data, "kill-p", "kill ps 0 (2 ps)", TC.cluster_spec(1, 1, 2),
                  ("ps", 0), "ps 0")
        kill_case(C, tmp, data, "kill-c", "kill the chief (1 ps)", TC.cluster_spec(1, 1, 1),
                  ("chief", 0), None)
        cancel_case(C, tmp, data)
        stall_case(C, tmp, data, "stall-r", "SIGSTOP worker 0 (ring of 4)", TC.cluster_spec(1, 3, 0))
        stall_case(C, tmp, data, "stall-p", "SIGSTOP worker 0 (1 ps)", TC.cluster_spec(1, 2, 1))
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
