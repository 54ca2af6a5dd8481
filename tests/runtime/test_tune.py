"""tfdist tune: seeded sampling over the search space (checked against the
space's own distributions), the bandit policy replayed independently from
every trial's metrics.jsonl, the best trial, tune.json, Ctrl-C, bad input."""
import json
import math
import os
import signal
import subprocess
import time

import numpy as np

import idxgen
import tfdtest as T

d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(21), 1200, 300, gz=True)

SPACE = {"batch-size": [25, 50, 100], "first-layer-neurons": [10, 50, 200, 300, 500],
         "second-layer-neurons": [10, 50, 200, 500]}


def plan(*args, train=()):
    p = T.run(["tune", "--dry-run"] + list(args) + ["--", "--data-folder", data] + list(train))
    T.check(p.returncode == 0, f"dry run {args}: {p.returncode} {p.stderr.strip()}")
    out = {}
    for line in p.stdout.splitlines():
        tid, *rest = line.split()
        out[tid] = {rest[i][2:]: float(rest[i + 1]) for i in range(0, len(rest), 2)}
    return out


# ---- sampling: in the space, seeded, trial k independent of the count ----
big = plan("--trials", "400", "--seed", "7")
T.check(len(big) == 400, f"400 trials planned, got {len(big)}")
lr = np.array([t["learning-rate"] for t in big.values()])
for flag, choices in SPACE.items():
    vals = [t[flag] for t in big.values()]
    T.check(set(vals) == set(choices), f"{flag}: values {sorted(set(vals))}, want {choices}")
    # each choice ~ 400/len; 5 sigma of a binomial is a loose, never-flaky bound
    p = 1 / len(choices)
    for c in choices:
        n = vals.count(c)
        T.check(abs(n - 400 * p) < 5 * math.sqrt(400 * p * (1 - p)), f"{flag}={c}: {n} of 400")
T.check(lr.min() >= math.exp(-6) and lr.max() <= math.exp(-1), f"lr range {lr.min()}..{lr.max()}")
u = (np.log(lr) + 6) / 5  # uniform(0,1) if lr = exp(uniform(-6, -1))
T.check(abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / 400), f"log-lr mean {u.mean()}")
T.check(abs(u.var() - 1 / 12) < 0.02, f"log-lr variance {u.var()}")
small = plan("--trials", "5", "--seed", "7")
T.check(all(small[k] == big[k] for k in small), "trial k depends on --trials")
other = plan("--trials", "5", "--seed", "8")
T.check(other != small, "--seed 8 planned the same trials as --seed 7")

# a space of our own, floats and a flag outside the default space
space = os.path.join(d, "space.json")
with open(space, "w") as f:
    json.dump({"learning-rate": {"uniform": [0.02, 0.3]}, "batch-size": {"choice": [20, 40]},
               "momentum": {"choice": [0.5, 0.9]}}, f)
own = plan("--trials", "50", "--space", space, train=["--optimizer", "momentum"])
# momentum is read by --optimizer momentum alone: tuning it under sgd is refused
p = T.run(["tune", "--dry-run", "--space", space, "--", "--data-folder", data])
T.check(p.returncode == 2 and "only --optimizer momentum uses" in p.stderr,
        f"momentum under sgd: {p.returncode} {p.stderr.strip()}")
T.check(all(set(t) == {"learning-rate", "batch-size", "momentum"} for t in own.values()),
        "own space: wrong flags")
T.check(all(0.02 <= t["learning-rate"] <= 0.3 and t["batch-size"] in (20, 40)
            and t["momentum"] in (0.5, 0.9) for t in own.values()), "own space: value outside")

# a space with choices of strings (--optimizer, --lr-schedule): words on the
# command line, each about equally often, and trials that run with them
words = {"optimizer": ["sgd", "adam", "nesterov"], "lr-schedule": ["constant", "cosine"]}
with open(space, "w") as f:
    json.dump({k: {"choice": v} for k, v in words.items()} |
              {"learning-rate": {"loguniform": [-7, -3]}}, f)
p = T.run(["tune", "--dry-run", "--trials", "300", "--seed", "5", "--space", space, "--",
           "--data-folder", data])
T.check(p.returncode == 0, f"word space: {p.returncode} {p.stderr.strip()}")
rows = [line.split()[1:] for line in p.stdout.splitlines()]
planned = [dict(zip(r[0::2], r[1::2])) for r in rows]
for flag, choices in words.items():
    vals = [t.get("--" + flag) for t in planned]
    T.check(set(vals) == set(choices), f"{flag}: planned {sorted(set(map(str, vals)))}")
    pr = 1 / len(choices)
    for c in choices:
        T.check(abs(vals.count(c) - 300 * pr) < 5 * math.sqrt(300 * pr * (1 - pr)),
                f"{flag}={c}: {vals.count(c)} of 300")
out = os.path.join(d, "tune-words")
p = T.run(["tune", "--trials", "3", "--concurrent", "1", "--seed", "5", "--space", space,
           "--outputs", out, "--", "--data-folder", data, "--epochs", "1"], timeout=300)
T.check(p.returncode == 0, f"word tune: {p.returncode} {p.stderr.strip()[-500:]}")
if p.returncode == 0:
    for t in json.load(open(os.path.join(out, "tune.json")))["trials"]:
        cfg = json.load(open(os.path.join(t["outputs"], "outputs", "run.json")))["config"]
        T.check(t["params"]["optimizer"] == cfg["optimizer"] and
                t["params"]["lr-schedule"] == cfg["lr_schedule"] and
                t["params"]["optimizer"] in words["optimizer"],
                f"{t['id']}: params {t['params']} vs config {cfg['optimizer']}, {cfg['lr_schedule']}")

# ---- a real tune, one trial at a time: the policy replays exactly ----
out = os.path.join(d, "tune")
p = T.run(["tune", "--trials", "6", "--concurrent", "1", "--seed", "3", "--slack-factor", "0.02",
           "--evaluation-interval", "1", "--outputs", out, "--", "--data-folder", data,
           "--epochs", "3"], timeout=300)
T.check(p.returncode == 0, f"tune failed: {p.returncode} {p.stderr.strip()[-500:]}")
tj = json.load(open(os.path.join(out, "tune.json")))
T.check(tj["status"] == "Completed" and len(tj["trials"]) == 6, f"tune.json: {tj['status']}")
want = plan("--trials", "6", "--seed", "3")
board, best_done = {}, None
for t in tj["trials"]:
    T.check(t["params"] == want[t["id"]], f"{t['id']}: params {t['params']} != plan")
    run = json.load(open(os.path.join(t["outputs"], "outputs", "run.json")))
    cfg = run["config"]
    T.check(cfg["batch_size"] == t["params"]["batch-size"]
            and cfg["first_layer_neurons"] == t["params"]["first-layer-neurons"]
            and cfg["learning_rate"] == t["params"]["learning-rate"] and cfg["epochs"] == 3,
            f"{t['id']}: the run's config does not match its params")
    vals = [r["value"] for r in T.metrics(os.path.join(t["outputs"], "outputs"))
            if r["name"] == "validation_acc"]
    best, stop = -1.0, 0
    for k, v in enumerate(vals, 1):  # BanditPolicy, interval 1, slack 0.02
        best = max(best, v)
        board[k] = max(board.get(k, -1.0), best)
        if best < board[k] / 1.02:
            stop = k
            break
    got_stop = t.get("early_termination", {}).get("report", 0)
    T.check(got_stop == stop, f"{t['id']}: stopped at report {got_stop}, oracle {stop} ({vals})")
    T.check(t["status"] == ("EarlyTerminated" if stop else "Completed"),
            f"{t['id']}: status {t['status']}")
    T.check(t["reports"] == (stop or len(vals)) and t["final"] == vals[(stop or len(vals)) - 1],
            f"{t['id']}: reports {t['reports']} final {t['final']}")
    if not stop and (best_done is None or vals[-1] > best_done[1]):
        best_done = (t["id"], vals[-1])
T.check(any(t["status"] == "EarlyTerminated" for t in tj["trials"]), "no trial was stopped")
T.check(best_done and tj["best_trial"] == best_done[0], f"best {tj['best_trial']} != {best_done}")
T.check(f"best: {best_done[0]} validation_acc" in p.stdout, "the best trial is not printed")

# the folder is not reused
p = T.run(["tune", "--trials", "1", "--outputs", out, "--", "--data-folder", data])
T.check(p.returncode == 2 and "tune.json" in p.stderr, f"reuse: {p.returncode} {p.stderr.strip()}")
# ... nor its trials' folders (their metrics.jsonl and run.json would be read
# as the new trials' before these replace them)
os.rename(os.path.join(out, "tune.json"), os.path.join(d, "tune.json.saved"))
p = T.run(["tune", "--trials", "1", "--outputs", out, "--", "--data-folder", data])
T.check(p.returncode == 2 and "trial-01" in p.stderr and p.stderr.count("\n") == 1,
        f"reuse without tune.json: {p.returncode} {p.stderr.strip()}")

# A TF_CONFIG in tune's environment is not the trials': each trains alone
# (with it, the trial would wait --timeout for a worker that never comes).
out_tf = os.path.join(d, "tune-tfconfig")
cluster = json.dumps({"cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]},
                      "task": {"type": "chief", "index": 0}})
p = T.run(["tune", "--trials", "1", "--outputs", out_tf, "--", "--data-folder", data, "--epochs",
           "1", "--timeout", "5"], env={"TF_CONFIG": cluster}, timeout=120)
T.check(p.returncode == 0 and "best: trial-01" in p.stdout,
        f"tune under TF_CONFIG: {p.returncode} {p.stdout.strip()} {p.stderr.strip()}")

# ---- Ctrl-C: running trials end Canceled, the rest NotStarted, exit 130 ----
out2 = os.path.join(d, "tune2")
proc = subprocess.Popen([T.TFDIST, "tune", "--trials", "5", "--concurrent", "2", "--outputs", out2,
                         "--evaluation-interval", "1000000",
                         "--", "--data-folder", data, "--epochs", "400"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
t0 = time.time()


def trial_running(k):
    try:
        path = os.path.join(out2, f"trial-0{k}", "outputs", "run.json")
        return json.load(open(path)).get("status") == "Running"
    except (OSError, ValueError):
        return False


# both trials' own run.json say Running (a loaded machine may take seconds)
while time.time() - t0 < 60 and not (trial_running(1) and trial_running(2)):
    time.sleep(0.1)
proc.send_signal(signal.SIGINT)
so, se = proc.communicate(timeout=60)
T.check(proc.returncode == 130, f"Ctrl-C: exit {proc.returncode}: {se.strip()[-300:]}")
T.check("nan" not in so, f"Ctrl-C: a trial with no report prints nan: {so[-600:]}")
tj = json.load(open(os.path.join(out2, "tune.json")))
st = [t["status"] for t in tj["trials"]]
T.check(tj["status"] == "Canceled" and st == ["Canceled"] * 2 + ["NotStarted"] * 3,
        f"Ctrl-C statuses {tj['status']} {st}")
for t in tj["trials"][:2]:
    run = json.load(open(os.path.join(t["outputs"], "outputs", "run.json")))
    T.check(run["status"] == "Canceled", f"{t['id']}: run.json {run['status']}")

# a trial that fails: Failed, the line says where its log is, exit 1
huge = os.path.join(d, "huge.json")
with open(huge, "w") as f:
    json.dump({"batch-size": {"choice": [5000]}}, f)  # more than the 1200 samples
out6 = os.path.join(d, "tune6")
p = T.run(["tune", "--trials", "1", "--space", huge, "--outputs", out6, "--", "--data-folder",
           data])
log6 = os.path.join(out6, "trial-01", "train.log")
T.check(p.returncode == 1 and f"trial-01 Failed" in p.stdout and log6 in p.stdout
        and "exceeds" in open(log6).read(), f"failed trial: {p.returncode} {p.stdout[-300:]!r}")

# started with SIGCHLD ignored (inherited through exec): the trials are still
# waited for, and tune ends
out7 = os.path.join(d, "tune7")
wrapper = ("import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
           "os.execv(sys.argv[1], sys.argv[1:])")
try:
    p = subprocess.run(["/usr/bin/python3", "-c", wrapper, T.TFDIST, "tune", "--trials", "1",
                        "--outputs", out7, "--", "--data-folder", data, "--epochs", "1"],
                       capture_output=True, text=True, timeout=30)
    rc7 = p.returncode
except subprocess.TimeoutExpired:
    rc7 = "timeout"
st7 = json.load(open(os.path.join(out7, "tune.json")))["trials"][0]["status"]
T.check(rc7 == 0 and st7 == "Completed", f"SIGCHLD ignored: exit {rc7}, trial {st7}")

# ---- trials never outlive tune, whatever stops it ----
def trial_pids(folder):
    """The live `tfdist train` processes of the trials under folder."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        mine = any(a.startswith(folder.encode() + b"/trial-") for a in argv)
        if argv[1:2] == [b"train"] and mine:
            pids.append(int(pid))
    return sorted(pids)


def start_tune(folder, wrap=()):
    return subprocess.Popen([*wrap, T.TFDIST, "tune", "--trials", "2", "--concurrent", "2",
                             "--outputs", folder, "--evaluation-interval", "1000000", "--",
                             "--data-folder", data, "--epochs", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_reports(folder):
    """Until both trials have reported (so both are Running)."""
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            tj = json.load(open(os.path.join(folder, "tune.json")))
            if all(t["reports"] >= 1 for t in tj["trials"]):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def finish(proc, folder, what, timeout=30):
    """proc's exit code and tune.json's trial statuses; kills what is left."""
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        T.check(False, f"{what}: tune did not end within {timeout} s")
    t0 = time.time()
    while trial_pids(folder) and time.time() - t0 < 10:
        time.sleep(0.05)
    left = trial_pids(folder)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    T.check(not left, f"{what}: trials {left} outlived tune")
    tj = json.load(open(os.path.join(folder, "tune.json")))
    return proc.returncode, [t["status"] for t in tj["trials"]], tj


# Ctrl-C while the trials start (before train can record anything): Canceled,
# not Failed.
out3 = os.path.join(d, "tune3")
proc = start_tune(out3)
t0 = time.time()
while not os.path.exists(os.path.join(out3, "tune.json")) and time.time() - t0 < 30:
    time.sleep(0.002)
proc.send_signal(signal.SIGINT)
rc, st, _ = finish(proc, out3, "Ctrl-C at start")
T.check(rc == 130 and st == ["Canceled"] * 2, f"Ctrl-C at start: exit {rc}, statuses {st}")

# A trial that does not stop (here: SIGSTOPped) and a second Ctrl-C: tune
# kills it, reaps both and exits, leaving none behind.
out4 = os.path.join(d, "tune4")
proc = start_tune(out4)
T.check(wait_reports(out4), "stuck trial: the trials never reported")
pids = trial_pids(out4)
T.check(len(pids) == 2, f"stuck trial: trial processes {pids}")
if pids:
    os.kill(pids[0], signal.SIGSTOP)
proc.send_signal(signal.SIGINT)
time.sleep(0.5)
proc.send_signal(signal.SIGINT)
rc, st, _ = finish(proc, out4, "stuck trial, two Ctrl-C")
T.check(rc == 130 and st == ["Canceled"] * 2, f"stuck trial, two Ctrl-C: exit {rc}, statuses {st}")

# tune killed outright: its trials get SIGTERM from the kernel and record
# Canceled rather than train on unwatched.
out5 = os.path.join(d, "tune5")
proc = start_tune(out5)
T.check(wait_reports(out5), "tune killed: the trials never reported")
proc.kill()
proc.communicate()
finish(proc, out5, "tune killed")
for i in (1, 2):
    try:
        st = json.load(open(os.path.join(out5, f"trial-0{i}", "outputs", "run.json")))["status"]
    except (OSError, ValueError) as e:
        st = repr(e)
    T.check(st == "Canceled", f"tune killed: trial-0{i} run.json {st}")

# started with SIGINT and SIGTERM blocked (inherited through exec): Ctrl-C
# still stops tune, and tune's SIGTERM still reaches the trials
out8 = os.path.join(d, "tune8")
blocked = ("import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, "
           "{signal.SIGINT, signal.SIGTERM}); os.execv(sys.argv[1], sys.argv[1:])")
proc = start_tune(out8, ("/usr/bin/python3", "-c", blocked))
T.check(wait_reports(out8), "signals blocked: the trials never reported")
proc.send_signal(signal.SIGINT)
rc, st, _ = finish(proc, out8, "signals blocked", timeout=20)
T.check(rc == 130 and st == ["Canceled"] * 2, f"signals blocked: exit {rc}, statuses {st}")

# ---- bad input: one line naming the flag, the file and key ----
def bad(args, *needles, files=None):
    p = T.run(["tune"] + args)
    msg = p.stderr.strip()
    T.check(p.returncode == 2 and msg.count("\n") == 0 and all(n in msg for n in needles),
            f"tune {args}: {p.returncode} {msg!r}")


for name, sp, needle in (("unknown", {"no-such-flag": {"choice": [1]}}, '"no-such-flag"'),
                         ("string", {"device": {"choice": [1]}}, '"device"'),
                         ("word", {"optimizer": {"choice": ["sgd", "adagrad"]}}, "adagrad"),
                         ("mixed", {"optimizer": {"choice": ["sgd", 1]}}, "not a word"),
                         ("word for a number", {"epochs": {"choice": ["many"]}}, "not words"),
                         ("word range", {"optimizer": {"uniform": [0, 1]}}, "set of words"),
                         ("intuniform", {"epochs": {"uniform": [1, 5]}}, "choice"),
                         ("range", {"batch-size": {"choice": [0, 5]}}, "batch-size"),
                         ("shape", {"learning-rate": {"normal": [0, 1]}}, "loguniform"),
                         ("order", {"learning-rate": {"uniform": [0.5, 0.1]}}, "low < high")):
    path = os.path.join(d, f"bad-{name}.json")
    with open(path, "w") as f:
        json.dump(sp, f)
    bad(["--dry-run", "--space", path], path, needle)
bad(["--dry-run", "--", "--batch-size", "10"], "--batch-size", "tunes")
bad(["--dry-run", "--", "--outputs", "x"], "--outputs")
bad(["--dry-run", "--", "--epochz", "3"], "--epochz")
bad(["--dry-run", "--concurrent", "0"], "--concurrent")
bad(["--dry-run", "--space", os.path.join(d, "missing.json")], "missing.json")
# caught before any trial starts, not 20 times over in the trials' train.log
bad(["--dry-run", "--metric", "validaton_acc", "--", "--data-folder", data], "--metric",
    "validaton_acc")
bad(["--dry-run", "--", "--data-folder", os.path.join(d, "nodata")], "--data-folder", "nodata")
resume = os.path.join(d, "resume.json")
with open(resume, "w") as f:
    json.dump({"resume_from": "latest"}, f)
bad(["--dry-run", "--", "--data-folder", data, "--config", resume], resume, "resume")
trailing = os.path.join(d, "trailing.json")
with open(trailing, "w") as f:
    f.write('{"learning-rate": {"choice": [0.1]}} {"momentum": {"choice": [0.5]}}')
bad(["--dry-run", "--space", trailing, "--", "--data-folder", data], trailing)
T.done()
