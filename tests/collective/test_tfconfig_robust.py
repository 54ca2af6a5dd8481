"""TF_CONFIG start-up and agreement, each case a chief + 1 worker of plain
processes on one host (a run is ~1 s when it works):

- strangers on the chief's port before the worker starts (one connection
  that sends nothing and stays open, one that sends HTTP bytes), --timeout 3:
  both tasks still exit 0 (a silent stranger must not hold up the peers
  queued behind it);
- a cluster of "[::1]:port" addresses trains (skipped without IPv6 loopback);
- the worker given another --optimizer (the ring) or --learning-rate (1 ps):
  every task exits non-zero within 20 s, the chief's stderr names the flag
  and the worker's names both values; so with --resume-from auto on the
  chief and latest on the worker (rank 0's auto verdict is a collective);
- the worker's cluster list differs from the chief's: both end within 10 s
  (--timeout 20), the chief saying so and the worker told it was turned away."""
import os
import socket
import sys
import tempfile
import time

import tfcluster as TC

LIMIT_S = 20


def start(c, args, kind, index, extra=()):
    c.start(list(args) + list(extra), limit_s=LIMIT_S, which=[(kind, index)])


def run(c, args, worker_extra=(), before_worker=None):
    try:
        start(c, args, "chief", 0)
        if before_worker:
            before_worker()
        start(c, args, "worker", 0, worker_extra)
        for i in range(len(c.spec.get("ps", []))):
            start(c, args, "ps", i)
        c.wait(LIMIT_S + 5)
    finally:
        c.kill()


def strangers_case(C, tmp, data):
    spec = TC.cluster_spec(1, 1)
    folder = os.path.join(tmp, "strangers")
    c = TC.Cluster(folder, spec)
    args = TC.train_args(folder, data, ["--epochs", "1", "--timeout", "3"])
    host, port = spec["chief"][0].rsplit(":", 1)
    socks = []

    def connect_strangers():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and len(socks) < 2:
            try:
                socks.append(socket.create_connection((host, int(port)), timeout=1))
            except OSError:
                time.sleep(0.05)
        if len(socks) == 2:
            socks[1].sendall(b"GET / HTTP/1.0\r\n\r\n")

    try:
        run(c, args, before_worker=connect_strangers)
    finally:
        for s in socks:
            s.close()
    C.check(len(socks) == 2, "strangers: could not connect to the chief's port")
    bad = [t.name for t in c.tasks if t.rc != 0]
    if C.check(not bad, "strangers on the chief's port: %s did not exit 0" % bad, c.summary()):
        C.ok("a silent and a garbage stranger on the chief's port: both tasks exit 0")


def ipv6_case(C, tmp, data):
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("skip: no IPv6 loopback")
        return
    ports = TC.free_ports(2)
    spec = {"chief": ["[::1]:%d" % ports[0]], "worker": ["[::1]:%d" % ports[1]]}
    folder = os.path.join(tmp, "ipv6")
    c = TC.Cluster(folder, spec)
    run(c, TC.train_args(folder, data, ["--epochs", "1", "--timeout", "5"]))
    bad = [t.name for t in c.tasks if t.rc != 0]
    if C.check(not bad, "[::1] cluster: %s did not exit 0" % bad, c.summary()):
        C.ok("a cluster of [::1]:port addresses trains")


def disagree_case(C, tmp, data, name, nps, flag, mine, theirs):
    folder = os.path.join(tmp, "disagree-" + flag.strip("-"))
    c = TC.Cluster(folder, TC.cluster_spec(1, 1, nps))
    args = TC.train_args(folder, data, ["--epochs", "2", "--timeout", "5", flag, mine])
    t0 = time.monotonic()
    run(c, args, worker_extra=[flag, theirs])
    late = [t.name for t in c.tasks if t.ended_at is None or t.ended_at - t0 > LIMIT_S]
    zero = [t.name for t in c.tasks if t.rc == 0]
    C.check(not late and not zero, "%s: tasks %s exit 0, %s not ended within %d s (want all to "
            "fail)" % (name, zero, late, LIMIT_S), c.summary())
    chief, worker = c.task("chief", 0).stderr(), c.task("worker", 0).stderr()
    C.check(flag in chief and "rank 1" in chief, "%s: the chief's stderr does not name %s and "
            "rank 1" % (name, flag), chief)
    C.check(mine in worker and theirs in worker, "%s: the worker's stderr does not give both "
            "values (%s, %s)" % (name, mine, theirs), worker)
    if not late and not zero:
        C.ok("%s: %s" % (name, chief.strip().splitlines()[-1] if chief.strip() else ""))


def resume_auto_disagree_case(C, tmp, data):
    """The chief given --resume-from auto, the worker --resume-from latest:
    only an "auto" rank takes part in rank 0's checkpoint-or-not broadcast,
    so the agreement check must tell them apart (it saw both as "given", and
    the tasks failed later on mismatched collectives, naming no flag)."""
    name = "worker's --resume-from latest, the chief's auto"
    folder = os.path.join(tmp, "disagree-resume-auto")
    c = TC.Cluster(folder, TC.cluster_spec(1, 1, 0))
    args = TC.train_args(folder, data, ["--epochs", "1", "--timeout", "5"])
    t0 = time.monotonic()
    try:
        start(c, args, "chief", 0, ["--resume-from", "auto"])
        start(c, args, "worker", 0, ["--resume-from", "latest"])
        c.wait(LIMIT_S + 5)
    finally:
        c.kill()
    late = [t.name for t in c.tasks if t.ended_at is None or t.ended_at - t0 > LIMIT_S]
    zero = [t.name for t in c.tasks if t.rc == 0]
    chief, worker = c.task("chief", 0).stderr(), c.task("worker", 0).stderr()
    C.check(not late and not zero, "%s: tasks %s exit 0, %s late" % (name, zero, late), c.summary())
    C.check("--resume-from" in chief and "rank 1" in chief and "--resume-from auto" in worker,
            "%s: the chief should name --resume-from and rank 1, the worker rank 0's auto"
            % name, chief + worker)
    if not late and not zero and "--resume-from auto" in worker:
        C.ok("%s: %s" % (name, worker.strip().splitlines()[-1]))


def mismatch_case(C, tmp, data, workers):
    """Worker 0's TF_CONFIG lists another cluster (its own address moved):
    the chief says so, and turns worker 0 away with the reason, so both end
    within seconds, well before --timeout 20. With 2 workers listed (worker
    1 never started), worker 0 is still waiting for worker 1 when told."""
    name = "worker 0's cluster list differs (%d workers listed)" % workers
    folder = os.path.join(tmp, "mismatch%d" % workers)
    spec = TC.cluster_spec(1, workers, 0)
    other = dict(spec, worker=["127.0.0.1:%d" % TC.free_ports(1)[0]] + spec["worker"][1:])
    args = TC.train_args(folder, data, ["--epochs", "1", "--timeout", "20"])
    c, w = TC.Cluster(folder, spec), TC.Cluster(os.path.join(folder, "w"), other)
    t0 = time.monotonic()
    try:
        c.start(args, limit_s=LIMIT_S + 20, which=[("chief", 0)])
        w.start(args, limit_s=LIMIT_S + 20, which=[("worker", 0)])
        c.wait(15)
        w.wait(15)
    finally:
        c.kill()
        w.kill()
    chief, worker = c.tasks[0], w.tasks[0]
    late = [t.name for t in (chief, worker) if t.ended_at is None or t.ended_at - t0 > 10]
    C.check(not late and chief.rc not in (0, None) and worker.rc not in (0, None),
            "%s: chief exit %s, worker exit %s, late %s" % (name, chief.rc, worker.rc, late),
            c.summary() + "\n" + w.summary())
    C.check("different cluster list" in chief.stderr(), "%s: the chief does not say why" % name,
            chief.stderr())
    said = worker.stderr()
    if C.check("turned away" in said and "another cluster list" in said,
               "%s: the worker is not told why" % name, said):
        C.ok("%s: worker: %s" % (name, said.strip().splitlines()[-1]))


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"), n_train=600, n_test=100)
        strangers_case(C, tmp, data)
        mismatch_case(C, tmp, data, 1)
        mismatch_case(C, tmp, data, 2)
        ipv6_case(C, tmp, data)
        disagree_case(C, tmp, data, "worker's --optimizer differs (ring)", 0, "--optimizer",
                      "sgd", "momentum")
        disagree_case(C, tmp, data, "worker's --learning-rate differs (1 ps)", 1,
                      "--learning-rate", "0.01", "0.02")
        resume_auto_disagree_case(C, tmp, data)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
