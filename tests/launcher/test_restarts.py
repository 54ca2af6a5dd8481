"""tfdistrun --max-restarts with train --resume-from auto:
- one rank of a 2-rank job is killed (SIGKILL) after its first checkpoint:
  the job is started again once, resumes from the latest checkpoint, and its
  model and every epoch's validation_acc equal those of the same job run
  without a kill, bit for bit (h5py);
- a job that keeps failing is started 1 + N times and ends with the failure's
  exit code; bad input (exit 2) and a SIGTERM to tfdistrun are not restarted,
  nor is a job stopped in the wait between two attempts;
- --resume-from auto on an empty --outputs starts afresh;
- the flag's own errors are one line and exit 2."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


import launchutil as lu
import tfdtest as T

DATA = "/usr/share/datasets/fashion-mnist"
RESTART = "tfdistrun: the job ended with exit code"
jobs = []   # every tfdistrun started, for stop_jobs


def flags(tmp, tag, epochs=5):
    return ["train", "--data-folder", DATA, "--epochs", str(epochs), "--max-steps", "300",
            "--checkpoint-every", "1", "--allreduce", "ring", "--progress", "off",
            "--resume-from", "auto", "--outputs", os.path.join(tmp, tag, "out"),
            "--logs", os.path.join(tmp, tag, "logs")]


def start(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([sys.executable, lu.TFDISTRUN, "--oversubscribe"] + args, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    jobs.append(p)
    return p


def stop_jobs(tmp):
    """Teardown, on failure and on SIGTERM (meson's timeout) too: the jobs run
    in their own sessions, out of reach of meson's kill of our group."""
    for p in jobs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for pid in rank_pids(tmp):   # ranks sit in process groups of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def finish(p, limit=120):
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        T.check(False, "tfdistrun did not end within %d s" % limit)
    return p.returncode, out, err


def rank_pids(outputs):
    """The tfdist processes (not mpirun) whose command line names outputs."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().split(b"\0")
            with open("/proc/%s/comm" % d) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm == "tfdist" and outputs.encode() in cmd:
            pids.append(int(d))
    return sorted(pids)


def wait_for(path, limit):
    t = time.time() + limit
    while time.time() < t and not os.path.exists(path):
        time.sleep(0.01)
    return os.path.exists(path)


def files_text(folder):
    """Every file's text under folder, joined."""
    texts = []
    for d, _, names in os.walk(folder):
        for n in sorted(names):
            with open(os.path.join(d, n), errors="replace") as f:
                texts.append(f.read())
    return "\n".join(texts)


def per_epoch(out, name):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [(r["epoch"], r["value"]) for r in rows if r["name"] == name]


def test_killed_rank(tmp):
    ref = flags(tmp, "ref")
    rc, out, err = finish(start(["-np", "2", "--max-restarts", "2"] + ref))
    T.check(rc == 0 and RESTART not in err, "reference job: exit %d\n%s" % (rc, err[-800:]))
    T.check("--resume-from auto: no checkpoint in" in out, "auto on an empty --outputs: %s" % out[:400])
    job = flags(tmp, "killed")
    outputs = job[job.index("--outputs") + 1]
    ranks_out = os.path.join(tmp, "killed", "ranks-out")
    p = start(["-np", "2", "--max-restarts", "2", "--output-filename", ranks_out] + job)
    killed = None
    if wait_for(os.path.join(outputs, "checkpoints", "ckpt-epoch-1.h5"), 60):
        pids = rank_pids(outputs)
        if len(pids) == 2:
            killed = pids[-1]
            os.kill(killed, signal.SIGKILL)
    rc, out, err = finish(p)
    T.check(killed is not None, "no rank to kill (job: %s)" % err[-400:])
    T.check(rc == 0, "killed job: exit %d\n%s" % (rc, err[-800:]))
    T.check(err.count(RESTART) == 1 and "restart 1 of 2" in err,
            "killed job: restarts %d\n%s" % (err.count(RESTART), err[-800:]))
    run = json.load(open(os.path.join(outputs, "run.json")))
    T.check(run["status"] == "Completed" and run.get("resumed_from", {}).get("epoch", 0) >= 1,
            "killed job: run.json %s %s" % (run["status"], run.get("resumed_from")))
    ref_out = ref[ref.index("--outputs") + 1]
    T.check(per_epoch(outputs, "validation_acc") == per_epoch(ref_out, "validation_acc"),
            "validation_acc per epoch: %s vs %s" % (per_epoch(outputs, "validation_acc"),
                                                    per_epoch(ref_out, "validation_acc")))
    same = T.bits_equal(*(T.weights(os.path.join(o, "model", "model.h5"))
                          for o in (outputs, ref_out)))
    T.check(same, "the restarted job's model differs from the uninterrupted one's")
    # --output-filename: the restart keeps the failed attempt's rank output
    texts = files_text(ranks_out)
    T.check("--resume-from auto: no checkpoint in" in texts and "tfdist: resuming from" in texts,
            "--output-filename %s: both attempts' output expected, got %s" % (ranks_out, texts[:800]))


def test_no_restart_cases(tmp):
    # a job that fails every time: 1 + 1 starts, the failure's exit code
    job = flags(tmp, "always", epochs=2)
    env = {"TFDIST_FAULT_FAIL_RANK": "1", "TFDIST_FAULT_FAIL_STEP": "5"}
    rc, out, err = finish(start(["-np", "2", "--max-restarts", "1", "-x",
                                 "TFDIST_FAULT_FAIL_RANK", "-x", "TFDIST_FAULT_FAIL_STEP"] + job,
                                env))
    T.check(rc not in (0, 2) and err.count(RESTART) == 1 and "restart 1 of 1" in err,
            "always failing: exit %d, %d restarts\n%s" % (rc, err.count(RESTART), err[-600:]))
    # bad input: exit 2 at once
    job = flags(tmp, "bad", epochs=2) + ["--batch-size", "0"]
    rc, out, err = finish(start(["-np", "2", "--max-restarts", "3"] + job))
    T.check(rc == 2 and RESTART not in err, "bad input: exit %d\n%s" % (rc, err[-600:]))
    # SIGTERM to tfdistrun: the job stops, and is not started again
    job = flags(tmp, "term", epochs=30)
    outputs = job[job.index("--outputs") + 1]
    p = start(["-np", "2", "--max-restarts", "3"] + job)
    if wait_for(os.path.join(outputs, "checkpoints", "ckpt-epoch-1.h5"), 60):
        p.send_signal(signal.SIGTERM)
    t0 = time.time()
    rc, out, err = finish(p, 60)
    T.check(rc != 0 and RESTART not in err and time.time() - t0 < 30,
            "SIGTERM: exit %d after %.1f s\n%s" % (rc, time.time() - t0, err[-600:]))
    T.check(not rank_pids(outputs), "SIGTERM: ranks left running")


def test_stop_between_attempts(tmp):
    """A SIGTERM while tfdistrun waits to start the next attempt: no new
    attempt. A fake mpirun: its first start fails at once, a later one would
    run for 60 s, so a start after the stop shows as a late exit."""
    log, fake = os.path.join(tmp, "fake-starts"), os.path.join(tmp, "fake-mpirun")
    with open(fake, "w") as f:
        f.write('#!/bin/sh\necho start >> "%s"\n'
                'if [ "$(grep -c start "%s")" = 1 ]; then echo failed >> "%s"; exit 1; fi\n'
                'exec sleep 60\n' % (log, log, log))
    os.chmod(fake, 0o755)
    p = start(["--mpirun", fake, "-np", "1", "--max-restarts", "3"] + flags(tmp, "between"))
    t = time.time() + 30
    while time.time() < t and "failed" not in (open(log).read() if os.path.exists(log) else ""):
        time.sleep(0.01)
    time.sleep(0.2)   # inside tfdistrun's 1 s wait before the restart
    p.send_signal(signal.SIGTERM)
    t0 = time.time()
    rc, out, err = finish(p, 90)
    starts = open(log).read().count("start") if os.path.exists(log) else 0
    T.check(rc == 128 + signal.SIGTERM and time.time() - t0 < 10,
            "SIGTERM between attempts: exit %d after %.1f s, %d start(s)\n%s"
            % (rc, time.time() - t0, starts, err[-600:]))


def test_flag_errors():
    for args, needle in ((["--max-restarts", "x"], "not a whole number"),
                         (["--max-restarts", "2", "/bin/true"], "only for tfdist train"),
                         (["--max-restarts", "2", "train", "--epochs", "1"], "--resume-from auto"),
                         (["--max-restarts", "2", "train", "--resume-from", "latest"],
                          "--resume-from auto")):
        full = ["--dry-run", "-np", "1"] + args + ([] if len(args) > 2 else ["train"])
        r = subprocess.run([sys.executable, lu.TFDISTRUN] + full, capture_output=True, text=True,
                           timeout=30)
        line = r.stderr.strip()
        T.check(r.returncode == 2 and "\n" not in line and needle in line,
                "%s: exit %d: %s" % (" ".join(args), r.returncode, line))
    r = subprocess.run([sys.executable, lu.TFDISTRUN, "--dry-run", "-np", "1", "--max-restarts",
                        "2", "train", "--resume-from=auto"], capture_output=True, text=True,
                       timeout=30)
    T.check(r.returncode == 0 and "restarted up to 2 times" in r.stdout,
            "--resume-from=auto: exit %d %s %s" % (r.returncode, r.stdout, r.stderr))
    cfg = os.path.join(tempfile.gettempdir(), "tfdist-restarts-%d.json" % os.getpid())
    with open(cfg, "w") as f:
        json.dump({"resume_from": "auto", "checkpoint_every": 0}, f)
    r = subprocess.run([sys.executable, lu.TFDISTRUN, "--dry-run", "-np", "1", "--max-restarts",
                        "1", "train", "--config", cfg], capture_output=True, text=True, timeout=30)
    os.unlink(cfg)
    T.check(r.returncode == 0 and "--checkpoint-every 0 writes no checkpoint" in r.stderr,
            "no checkpoints under restarts: no warning: %s" % r.stderr)


def main():
    if not os.path.isdir(DATA):
        print("skip: %s is not installed" % DATA)
        sys.exit(lu.SKIP)
    lu.on_signals_exit()
    test_flag_errors()
    with tempfile.TemporaryDirectory(prefix="tfdist-restarts.") as tmp:
        try:
            test_stop_between_attempts(tmp)
            test_killed_rank(tmp)
            test_no_restart_cases(tmp)
        finally:
            stop_jobs(tmp)


if __name__ == "__main__":
    main()
    T.done()
