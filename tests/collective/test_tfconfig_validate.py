"""TF_CONFIG validation (SPEC "TF_CONFIG"): a bad TF_CONFIG makes `tfdist
train` exit 2 at once (well before --timeout, so before any network wait)
with one stderr line that contains "TF_CONFIG" and names the field; TF_CONFIG
set under an mpirun of 2 ranks is refused, naming TF_CONFIG; a peer listed in
TF_CONFIG but never started makes the chief fail within --timeout 3 plus a
few seconds, naming that task ("worker 1"), and the started worker fails too.
--allreduce other than auto/tcp in a cluster, or tcp without one, is exit 2."""
import json
import os
import subprocess
import sys
import tempfile
import time

import tfcluster as TC

NO_WAIT_S = 10      # a rejected TF_CONFIG must end this fast (the --timeout is 60)
UNREACH_TIMEOUT = 3
UNREACH_SLACK_S = 7  # "within --timeout 3 + a few seconds"


def cases(a):
    """(name, TF_CONFIG text, words the one stderr line must contain)."""
    good = {"chief": [a[0]], "worker": [a[1], a[2]]}

    def cfg(cluster, task):
        d = {}
        if cluster is not None:
            d["cluster"] = cluster
        if task is not None:
            d["task"] = task
        return json.dumps(d)

    w0 = {"type": "worker", "index": 0}
    return [
        ("not JSON (truncated)", '{"cluster": {"chief": ["%s"' % a[0], []),
        ("not JSON (key=value)", "chief=%s" % a[0], []),
        ("cluster missing", cfg(None, w0), ["cluster"]),
        ("cluster not an object", cfg([a[0], a[1]], w0), ["cluster"]),
        ("cluster a string", cfg("chief", w0), ["cluster"]),
        ("two chiefs", cfg({"chief": [a[0], a[3]], "worker": [a[1]]}, w0), ["cluster.chief"]),
        ("task missing", cfg(good, None), ["task"]),
        ("task.type missing", cfg(good, {"index": 0}), ["task.type"]),
        ("task.type unknown", cfg(good, {"type": "boss", "index": 0}), ["task.type"]),
        ("task.type ps, no ps in cluster", cfg(good, {"type": "ps", "index": 0}), ["task.type"]),
        ("task.type chief, no chief in cluster",
         cfg({"worker": [a[1], a[2]]}, {"type": "chief", "index": 0}), ["task.type"]),
        ("task.index out of range", cfg(good, {"type": "worker", "index": 2}), ["task.index"]),
        ("task.index negative", cfg(good, {"type": "worker", "index": -1}), ["task.index"]),
        ("task.index 1 for the chief", cfg(good, {"type": "chief", "index": 1}), ["task.index"]),
        ("task.index not a number", cfg(good, {"type": "worker", "index": "one"}), ["task.index"]),
        ("address without a port", cfg({"chief": [a[0]], "worker": [a[1], "nohost"]}, w0),
         ["cluster.worker[1]"]),
        ("address with port 99999", cfg({"chief": [a[0]], "worker": [a[1], "h:99999"]}, w0),
         ["cluster.worker[1]"]),
        ("ps address with a non-numeric port",
         cfg({"chief": [a[0]], "worker": [a[1]], "ps": ["127.0.0.1:abc"]}, w0), ["cluster.ps[0]"]),
        ("chief address not host:port", cfg({"chief": ["nohost"], "worker": [a[1]]}, w0),
         ["cluster.chief[0]"]),
        ("no chief and no worker", cfg({"ps": [a[0], a[1]]}, {"type": "ps", "index": 0}),
         [("chief", "worker")]),
        ("the same address twice", cfg({"chief": [a[0]], "worker": [a[1], a[0]]}, w0),
         [("cluster.", a[0])]),
    ]


def has(text, word):
    """word, or any of a tuple of alternatives, occurs in text."""
    if isinstance(word, tuple):
        return any(w in text for w in word)
    return word in text


def bad_config_case(C, tmp, data, i, name, text, words):
    folder = os.path.join(tmp, "bad-%d" % i)
    t0 = time.monotonic()
    rc, _, err = TC.run_plain(folder, data, ["--epochs", "1", "--batch-size", "20"],
                              limit_s=NO_WAIT_S + 5, env_extra={"TF_CONFIG": text})
    elapsed = time.monotonic() - t0
    lines = [l for l in err.splitlines() if l.strip()]
    line = lines[0] if len(lines) == 1 else None
    want = ["TF_CONFIG"] + list(words)
    ok = C.check(rc == 2, "%s: exit %s, want 2" % (name, rc), "  stderr: %s" % err.strip()[-600:])
    ok &= C.check(elapsed <= NO_WAIT_S, "%s: took %.1f s (> %d s): waited before validating"
                  % (name, elapsed, NO_WAIT_S))
    ok &= C.check(line is not None, "%s: stderr has %d lines, want exactly 1: %r"
                  % (name, len(lines), err.strip()[-600:]))
    if line is not None:
        missing = [w for w in want if not has(line, w)]
        ok &= C.check(not missing, "%s: the error line lacks %s: %r" % (name, missing, line))
    if ok:
        C.ok("%s: exit 2 in %.1f s: %s" % (name, elapsed, line))


def mpirun_case(C, tmp, data):
    """TF_CONFIG (valid) set while mpirun starts 2 ranks: refused, naming TF_CONFIG."""
    folder = os.path.join(tmp, "mpirun")
    spec = TC.cluster_spec(chief=1, worker=1)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CONFIG"] = TC.tf_config(spec, "chief", 0)
    cmd = (["timeout", "-k", "5", "60"] + TC.MPIRUN + ["-np", "2", "-x", "TF_CONFIG", TC.TFDIST] +
           TC.train_args(folder, data, ["--epochs", "1", "--batch-size", "10", "--timeout", "5"]))
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=75)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        rc, out = None, "test: mpirun did not end within 75 s"
    elapsed = time.monotonic() - t0
    name = "TF_CONFIG under mpirun -np 2"
    ok = C.check(rc not in (0, None), "%s: exit %s, want non-zero" % (name, rc), out[-1500:])
    ok &= C.check("TF_CONFIG" in out, "%s: no message names TF_CONFIG" % name, out[-1500:])
    if ok:
        msg = [l for l in out.splitlines() if "TF_CONFIG" in l][0]
        C.ok("%s: exit %d in %.1f s: %s" % (name, rc, elapsed, msg.strip()))


def allreduce_flag_case(C, tmp, data, addr):
    """--allreduce ring in a cluster, and --allreduce tcp without one: exit 2 at once."""
    one = json.dumps({"cluster": {"chief": [addr]}, "task": {"type": "chief", "index": 0}})
    for name, flag, env in (("--allreduce ring under TF_CONFIG", "ring", {"TF_CONFIG": one}),
                            ("--allreduce tcp without TF_CONFIG", "tcp", {"TF_CONFIG": ""})):
        t0 = time.monotonic()
        rc, _, err = TC.run_plain(os.path.join(tmp, "flag-" + flag), data,
                                  ["--epochs", "1", "--allreduce", flag], limit_s=NO_WAIT_S + 5,
                                  env_extra=env)
        line = err.strip()
        ok = C.check(rc == 2 and "\n" not in line and "--allreduce " + flag in line and
                     "TF_CONFIG" in line, "%s: exit %s, want 2 and one line naming the flag and "
                     "TF_CONFIG" % (name, rc), "  stderr: %s" % line[-600:])
        if ok:
            C.ok("%s: exit 2 in %.1f s: %s" % (name, time.monotonic() - t0, line))


def unreachable_case(C, tmp, data):
    """chief, worker 0 and worker 1 in TF_CONFIG; worker 1 is never started."""
    folder = os.path.join(tmp, "unreachable")
    spec = TC.cluster_spec(chief=1, worker=2)
    c = TC.Cluster(folder, spec)
    name = "unreachable worker 1"
    args = TC.train_args(folder, data, ["--epochs", "1", "--batch-size", "10",
                                        "--timeout", str(UNREACH_TIMEOUT)])
    limit = UNREACH_TIMEOUT + UNREACH_SLACK_S
    try:
        t0 = time.monotonic()
        c.start(args, limit_s=60, which=[("chief", 0), ("worker", 0)])
        chief, w0 = c.task("chief", 0), c.task("worker", 0)
        c.wait(limit, [chief])
        chief_s = (chief.ended_at or time.monotonic()) - t0
        c.wait(UNREACH_TIMEOUT + 30 - (time.monotonic() - t0), [w0])
        w0_s = (w0.ended_at or time.monotonic()) - t0
    finally:
        c.kill()
    err = chief.stderr()
    ok = C.check(chief.rc is not None and chief_s <= limit,
                 "%s: the chief had not ended %.1f s after the start (limit %d s)"
                 % (name, chief_s, limit), c.summary())
    ok &= C.check(chief.rc not in (0, None), "%s: chief exit %s, want non-zero" % (name, chief.rc),
                  c.summary())
    ok &= C.check("worker 1" in err, "%s: the chief's stderr does not name 'worker 1'" % name,
                  "  chief stderr: %s" % err.strip()[-800:])
    ok &= C.check(w0.rc not in (0, None) and w0_s <= UNREACH_TIMEOUT + 30,
                  "%s: worker 0 exit %s after %.1f s, want non-zero within %d s"
                  % (name, w0.rc, w0_s, UNREACH_TIMEOUT + 30), c.summary())
    if ok:
        line = [l for l in err.splitlines() if "worker 1" in l][0]
        C.ok("%s: chief exit %d after %.1f s (%s); worker 0 exit %d after %.1f s"
             % (name, chief.rc, chief_s, line.strip(), w0.rc, w0_s))


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"), n_train=400, n_test=100)
        addrs = ["127.0.0.1:%d" % p for p in TC.free_ports(4)]
        for i, (name, text, words) in enumerate(cases(addrs)):
            bad_config_case(C, tmp, data, i, name, text, words)
        mpirun_case(C, tmp, data)
        allreduce_flag_case(C, tmp, data, addrs[3])
        unreachable_case(C, tmp, data)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
