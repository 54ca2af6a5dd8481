"""train --timeline on: each rank's Chrome trace, checked as data.
- 1 rank: strict JSON; exactly --timeline-steps steps per epoch; every phase
  once per step, in the order the step runs them, inside its step; the
  epoch spans; no .part left; the rank log names the file.
- 2 ranks (mpirun, ring, overlap on): each layer's allreduce on the
  collective thread with its exact byte count, submitted between the end of
  its layer's backward and the start of the next one, and finished before
  the update; with --overlap off, one reduction of all layers on the main
  thread.
- `tfdist timeline summary --json` against the same statistics computed
  here from the JSON (and the straggler share on a made-to-order file);
  `merge` gives one trace of both ranks.
- A run that fails leaves a readable .part; bad files and flags: exit 2,
  one line naming the file, line and field."""
import json
import os
import resource
import shutil
import signal
import subprocess

import numpy as np

import idxgen
import tfdtest as T

EPS = 0.002  # us: ts and dur are printed with 3 decimals
STEP_PHASES = ["data", "forward", "loss", "zero gradients", "backward dense_2",
               "backward dense_1", "backward dense"]

d = T.tmpdir()
data = os.path.join(d, "data")
idxgen.write_set(data, np.random.default_rng(11), 600, 100, gz=False, nested="")
H1, H2 = 24, 12
LAYER_BYTES = {"dense": (784 * H1 + H1) * 4, "dense_1": (H1 * H2 + H2) * 4,
               "dense_2": (H2 * 10 + 10) * 4}


def train(tag, extra, mpi=0, env=None):
    out, logs = os.path.join(d, tag, "out"), os.path.join(d, tag, "logs")
    p = T.run(["train", "--data-folder", data, "--outputs", out, "--logs", logs,
               "--batch-size", "10", "--first-layer-neurons", str(H1),
               "--second-layer-neurons", str(H2), "--progress", "off", "--timeline", "on"]
              + extra, mpi=mpi, env=env)
    return p, logs


def spans(events, name=None, tid=None):
    return [e for e in events if e["ph"] == "X" and (name is None or e["name"] == name)
            and (tid is None or e["tid"] == tid)]


def inside(e, outer):
    return e["ts"] >= outer["ts"] - EPS and e["ts"] + e["dur"] <= outer["ts"] + outer["dur"] + EPS


def end(e):
    return e["ts"] + e["dur"]


def step_children(events, step):
    return [e for e in spans(events, tid=0) if e["name"] not in ("step",) and inside(e, step)
            and e["dur"] < step["dur"] + EPS and e["name"] not in ("epoch steps",)]


# ---- one rank ----
p, logs = train("one", ["--epochs", "2", "--timeline-steps", "7", "--checkpoint-every", "2"])
T.check(p.returncode == 0, f"1-rank run failed: {p.stderr.strip()}")
path = os.path.join(logs, "timeline-0.json")
T.check(not os.path.exists(path + ".part"), "the .part was left after a clean run")
ev = json.load(open(path))  # strict JSON
meta = {(e["name"], e["tid"]): e["args"]["name"] for e in ev if e["ph"] == "M"}
T.check(meta.get(("process_name", 0), "").startswith("rank 0 ("), f"process name: {meta}")
T.check(all(e["pid"] == 0 for e in ev), "pid is not the rank")
steps = spans(ev, "step")
T.check(len(steps) == 14, f"{len(steps)} steps recorded, want 7 per epoch x 2")
for s in steps:
    kids = sorted(step_children(ev, s), key=lambda e: e["ts"])
    names = [k["name"] for k in kids]
    T.check(names == STEP_PHASES + ["update"], f"step at {s['ts']}: phases {names}")
    for a, b in zip(kids, kids[1:]):
        T.check(end(a) <= b["ts"] + EPS, f"{a['name']} overlaps {b['name']} at {a['ts']}")
for name, count in (("epoch steps", 2), ("evaluate", 2), ("epoch metrics", 2),
                    ("device sync", 2), ("checkpoint", 1)):
    got = spans(ev, name)
    T.check(len(got) == count, f"{name}: {len(got)} spans, want {count}")
    T.check(all(g["args"]["epoch"] in (1, 2) for g in got), f"{name}: epoch args {got}")
ep = spans(ev, "epoch steps")
T.check(all(any(inside(s, e) for e in ep) for s in steps), "a step outside its epoch span")
T.check(sum(s["dur"] for s in steps) <= sum(e["dur"] for e in ep) + EPS, "steps exceed epochs")
log = open(os.path.join(logs, "rank-0.log")).read()
T.check("timeline: " + path in log, "the rank log does not name the timeline")
one_ev = ev

# ---- two ranks, overlap on ----
# an earlier 4-rank run's files in the same --logs: the run clears them, so
# a summary of the folder is this run's alone
stale = os.path.join(d, "two", "logs")
os.makedirs(stale)
for name in ("timeline-2.json", "timeline-3.json.part", "timeline-1.json"):
    with open(os.path.join(stale, name), "w") as f:
        f.write('[\n{"name":"step","ph":"X","ts":1,"dur":2,"pid":%s,"tid":0}\n]\n' % name[9])
p, logs2 = train("two", ["--epochs", "1", "--timeline-steps", "12", "--allreduce", "ring",
                         "--overlap", "on"], mpi=2)  # not the default on 2 cores
T.check(p.returncode == 0, f"2-rank run failed: {p.stderr.strip()}")
ranks = [json.load(open(os.path.join(logs2, f"timeline-{r}.json"))) for r in (0, 1)]
for r, ev in enumerate(ranks):
    T.check(all(e["pid"] == r for e in ev), f"rank {r}: pid is not the rank")
    steps = spans(ev, "step")
    T.check(len(steps) == 12, f"rank {r}: {len(steps)} steps recorded, want 12")
    for layer, nbytes in LAYER_BYTES.items():
        red = spans(ev, "allreduce " + layer)  # the collective thread's, or a waiter's
        T.check(len(red) == 12, f"rank {r}: {len(red)} reductions of {layer}, want 12")
        T.check(all(x["args"]["bytes"] == nbytes and x["args"]["ok"] for x in red),
                f"rank {r}: {layer} reduction bytes {[x['args'] for x in red[:2]]}")
    nxt = {"dense_2": "backward dense_1", "dense_1": "backward dense", "dense": "allreduce wait"}
    for s in steps:
        kids = {k["name"]: k for k in step_children(ev, s)}
        for layer in LAYER_BYTES:
            red = [x for x in spans(ev, "allreduce " + layer)
                   if s["ts"] - EPS <= x["ts"] <= end(s) + EPS]
            if len(red) != 1 or "backward " + layer not in kids or "update" not in kids:
                T.check(False, f"rank {r}: step at {s['ts']}: {layer} spans missing")
                continue
            x = red[0]
            submitted = x["ts"] - x["args"]["queued_us"]
            T.check(end(kids["backward " + layer]) - EPS <= submitted <= kids[nxt[layer]]["ts"] + EPS,
                    f"rank {r}: {layer} submitted at {submitted}, not between its backward and "
                    f"the next span")
            T.check(end(x) <= kids["update"]["ts"] + EPS,
                    f"rank {r}: {layer} reduction ended after the update began")
    T.check(not spans(ev, "allreduce all layers"), f"rank {r}: unsplit reduction with overlap on")

p, logs3 = train("two-off", ["--epochs", "1", "--timeline-steps", "5", "--overlap", "off",
                             "--allreduce", "ring"], mpi=2)
T.check(p.returncode == 0, f"overlap-off run failed: {p.stderr.strip()}")
ev = json.load(open(os.path.join(logs3, "timeline-1.json")))
whole = spans(ev, "allreduce all layers")
T.check(len(whole) == 5 and all(x["args"]["bytes"] == sum(LAYER_BYTES.values()) for x in whole),
        f"overlap off: {len(whole)} whole-buffer reductions")
T.check(not [x for x in spans(ev) if x["name"].startswith("allreduce dense")],
        "overlap off: per-layer reductions")


# ---- summary against our own statistics ----
def pct(v, q):
    v = sorted(v)
    return v[max(int(np.ceil(q * len(v))) - 1, 0)]


def reduction(e):
    """An allreduce as it ran, on the collective thread or on a waiting main thread."""
    return e["name"].startswith("allreduce ") and e["name"] != "allreduce wait"


def hidden(ev):
    bw = [(e["ts"], end(e)) for e in spans(ev, tid=0) if e["name"].startswith("backward ")]
    red = [(e["ts"], end(e)) for e in spans(ev) if reduction(e)]
    tot = sum(b - a for a, b in red)
    hid = sum(max(0.0, min(b, y) - max(a, x)) for a, b in red for x, y in bw)
    return hid / tot if tot else None


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


s = T.run(["timeline", "summary", "--json", logs2])
T.check(s.returncode == 0, f"summary failed: {s.stderr.strip()}")
summ = json.loads(s.stdout) if s.returncode == 0 else {"ranks": []}
T.check([r["rank"] for r in summ["ranks"]] == [0, 1], f"summary ranks {summ['ranks'][:0]}")
T.check(sorted(f for f in os.listdir(logs2) if f.startswith("timeline-")) ==
        ["timeline-0.json", "timeline-1.json"], f"stale files left: {os.listdir(logs2)}")
EPOCH_SPANS = ("epoch steps", "device sync", "epoch metrics", "evaluate", "checkpoint")


def groups(ev):
    """Our own split of the spans into the summary's three lists, by name."""
    g = {"phases": {}, "allreduce": {}, "epoch_spans": {}}
    for e in spans(ev):
        key = ("allreduce" if e["tid"] != 0 or reduction(e) else
               "epoch_spans" if e["name"] in EPOCH_SPANS else "phases")
        g[key].setdefault(e["name"], []).append(e)
    return g


for got, ev in zip(summ["ranks"], ranks):
    step_total = sum(e["dur"] for e in spans(ev, "step"))
    for key, want in groups(ev).items():
        rows = {x["name"]: x for x in got[key]}
        T.check(sorted(rows) == sorted(want), f"rank {got['rank']} {key}: {sorted(rows)} vs "
                f"{sorted(want)}")
        for name, es in want.items():
            durs = [e["dur"] for e in es]
            row = rows.get(name, {})
            T.check(row.get("count") == len(durs) and close(row["mean_us"], float(np.mean(durs)))
                    and close(row["p50_us"], pct(durs, 0.5))
                    and close(row["p95_us"], pct(durs, 0.95)),
                    f"summary rank {got['rank']} {name}: {row} vs {len(durs)} spans")
            if key != "epoch_spans" and name != "step":
                T.check(close(row["share_of_step"], sum(durs) / step_total), f"{name}: share")
            if key == "allreduce":
                q = float(np.mean([e["args"]["queued_us"] for e in es]))
                T.check(close(row["mean_queued_us"], q), f"{name}: queued mean")
    h, want_h = got["allreduce_hidden_by_backward"], hidden(ev)
    T.check(h == want_h if None in (h, want_h) else close(h, want_h),
            f"hidden share {got['allreduce_hidden_by_backward']} vs {hidden(ev)}")
waits = [[e["dur"] for e in spans(ev, "allreduce wait")] for ev in ranks]
n = min(len(w) for w in waits)
last = [sum(1 for i in range(n) if int(np.argmin([w[i] for w in waits])) == r) / n
        for r in range(2)]
T.check([close(g["last_to_reduce_share"], x) for g, x in zip(summ["ranks"], last)] == [True] * 2,
        f"last_to_reduce_share {[g['last_to_reduce_share'] for g in summ['ranks']]} vs {last}")

# a straggler made to order: rank 2 waits least in 3 of 4 steps, rank 0 in 1
syn = os.path.join(d, "syn")
os.makedirs(syn)
for r, ws in enumerate(([1.0, 9, 9, 9], [5.0, 5, 5, 5], [7.0, 2, 2, 2])):
    with open(os.path.join(syn, f"timeline-{r}.json"), "w") as f:
        f.write("[\n" + "\n,".join(
            json.dumps({"name": nm, "ph": "X", "ts": 100 * i + off, "dur": dur, "pid": r, "tid": 0})
            for i, w in enumerate(ws) for nm, off, dur in (("step", 0, 50), ("allreduce wait", 10, w)))
            + ("\n]\n" if r else "\n"))  # rank 0 as a dead run's file: no ']'
s = T.run(["timeline", "summary", "--json", syn])
got = [g["last_to_reduce_share"] for g in json.loads(s.stdout)["ranks"]] if s.returncode == 0 else []
T.check(got == [0.25, 0.0, 0.75], f"synthetic straggler: {got} {s.stderr.strip()}")

# a reduction the waiting main thread ran is still a reduction, and not hidden
syn2 = os.path.join(d, "syn2.json")
with open(syn2, "w") as f:
    f.write("[\n" + "\n,".join(json.dumps(dict(name=nm, ph="X", ts=ts, dur=du, pid=0, tid=tid, **(
        {"args": {"queued_us": q}} if q is not None else {}))) for nm, ts, du, tid, q in (
        ("step", 0, 100, 0, None), ("backward dense", 10, 20, 0, None),
        ("allreduce dense_2", 20, 20, 1, 5.0), ("allreduce wait", 40, 40, 0, None),
        ("allreduce dense", 50, 20, 0, 30.0))) + "\n]\n")
s = T.run(["timeline", "summary", "--json", syn2])
r0 = json.loads(s.stdout)["ranks"][0] if s.returncode == 0 else {}
T.check(sorted((x["name"], x["count"], x.get("mean_queued_us")) for x in r0.get("allreduce", []))
        == [("allreduce dense", 1, 30.0), ("allreduce dense_2", 1, 5.0)] and
        sorted(x["name"] for x in r0.get("phases", [])) == ["allreduce wait", "backward dense", "step"]
        and r0.get("allreduce_hidden_by_backward") == 0.25,
        f"a reduction run by the waiting main thread: {r0}")

# names of any length: one row per name (a 63-byte copy made one row per span)
long_name = os.path.join(d, "long.json")
names = ["phase " + "x" * 90 + c for c in "ab"]
with open(long_name, "w") as f:
    f.write("[\n" + "\n,".join(json.dumps({"name": names[i % 2], "ph": "X", "ts": i, "dur": 1 + i % 2,
                                            "pid": 0, "tid": 0}) for i in range(40)) + "\n]\n")
s = T.run(["timeline", "summary", "--json", long_name])
rows = json.loads(s.stdout)["ranks"][0]["phases"] if s.returncode == 0 else []
T.check(sorted((x["name"], x["count"], x["mean_us"]) for x in rows) == [(names[0], 20, 1), (names[1], 20, 2)],
        f"long span names: {len(rows)} rows {[(x['name'][-3:], x['count']) for x in rows[:4]]}")

s = T.run(["timeline", "summary", "--json", os.path.join(d, "one", "logs", "timeline-0.json")])
r0 = json.loads(s.stdout)["ranks"][0] if s.returncode == 0 else {}
T.check(r0.get("allreduce_hidden_by_backward", 0) is None and
        r0.get("last_to_reduce_share", 0) is None, f"1 rank: shares should be null: {r0}")
s = T.run(["timeline", "summary", logs2])
T.check(s.returncode == 0 and "rank 1 (" in s.stdout and "allreduce dense_1" in s.stdout,
        f"text summary: {s.stdout[:300]} {s.stderr}")

merged = os.path.join(d, "merged.json")
m = T.run(["timeline", "merge", "--out", merged, logs2])
T.check(m.returncode == 0, f"merge failed: {m.stderr.strip()}")
if m.returncode == 0:
    mev = json.load(open(merged))
    T.check(len(mev) == len(ranks[0]) + len(ranks[1]), "merge lost or added events")
    T.check(sorted({e["pid"] for e in mev}) == [0, 1], "merge: pids")

# --out naming one of the inputs: refused, the input kept
over = os.path.join(d, "over")
shutil.copytree(logs2, over)
before = open(os.path.join(over, "timeline-0.json")).read()
m = T.run(["timeline", "merge", "--out", os.path.join(over, "timeline-0.json"), over])
T.check(m.returncode == 2 and "\n" not in m.stderr.strip() and "timeline-0.json" in m.stderr and
        open(os.path.join(over, "timeline-0.json")).read() == before,
        f"merge over its input: rc {m.returncode}: {m.stderr.strip()}")

# ---- a failing run, and bad input ----
p, logs4 = train("fail", ["--epochs", "1", "--timeline-steps", "0"],
                 env={"TFDIST_FAULT_FAIL_RANK": "0", "TFDIST_FAULT_FAIL_STEP": "20"})
part = os.path.join(logs4, "timeline-0.json.part")
T.check(p.returncode != 0 and os.path.exists(part) and
        not os.path.exists(os.path.join(logs4, "timeline-0.json")),
        f"failed run: rc {p.returncode}, part {os.path.exists(part)}")
if os.path.exists(part):
    s = T.run(["timeline", "summary", "--json", logs4])
    n = json.loads(s.stdout)["ranks"][0]["steps"] if s.returncode == 0 else -1
    T.check(n == 20, f"the .part of the failed run: {n} steps read, want 20 ({s.stderr.strip()})")

# A run that dies where an earlier one finished: the folder must not offer
# the earlier run's complete trace in place of this run's .part.
p, logs6 = train("rerun", ["--epochs", "1", "--timeline-steps", "6"])
T.check(p.returncode == 0, f"first run: {p.stderr.strip()}")
p, _ = train("rerun", ["--epochs", "1", "--timeline-steps", "0"],
             env={"TFDIST_FAULT_FAIL_RANK": "0", "TFDIST_FAULT_FAIL_STEP": "4"})
s = T.run(["timeline", "summary", "--json", logs6])
n = json.loads(s.stdout)["ranks"][0]["steps"] if s.returncode == 0 else -1
T.check(p.returncode != 0 and n == 4 and not os.path.exists(os.path.join(logs6, "timeline-0.json")),
        f"a failed rerun: summary read {n} steps, want its own 4 ({s.stderr.strip()})")


# The logs' disk fills up (a file size limit here): the trace is lost, not
# the trained model nor the run's record.
def small_files():
    resource.setrlimit(resource.RLIMIT_FSIZE, (60 << 10, 60 << 10))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead


full = os.path.join(d, "full")
p = subprocess.run([T.TFDIST, "train", "--data-folder", data, "--outputs", os.path.join(full, "out"),
                    "--logs", os.path.join(full, "logs"), "--batch-size", "10",
                    "--first-layer-neurons", "4", "--second-layer-neurons", "4", "--epochs", "2",
                    "--progress", "off", "--timeline", "on", "--timeline-steps", "0"],
                   preexec_fn=small_files, capture_output=True, text=True, timeout=300)
status = json.load(open(os.path.join(full, "out", "run.json"))).get("status")
T.check(p.returncode == 0 and status == "Completed" and
        os.path.exists(os.path.join(full, "out", "model", "model.h5")) and
        "timeline-0.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
        f"timeline write failure: rc {p.returncode}, run {status}: {p.stderr.strip()}")


def part_lines(path):
    """A .part's events, or None when it is cut inside a line."""
    text = open(path).read() if os.path.exists(path) else ""
    if not text.endswith("\n"):
        return None
    try:
        return [json.loads(x.lstrip(",")) for x in text.splitlines()[1:] if x.strip(" ,")]
    except ValueError:
        return None


# Several ranks: a failure ends the job by abort, not through trainer_free.
p, logs5 = train("fail2", ["--epochs", "1", "--timeline-steps", "0", "--allreduce", "ring"],
                 mpi=2, env={"TFDIST_FAULT_FAIL_RANK": "1", "TFDIST_FAULT_FAIL_STEP": "25"})
T.check(p.returncode != 0, "2-rank failing run succeeded")
# rank 1 fails before its step 25; rank 0 may hear of it while its step 24's
# reduction still waits for bytes in flight, and fail inside that step
want_steps = ((24, 25), (25,))
for r in (0, 1):
    got = part_lines(os.path.join(logs5, f"timeline-{r}.json.part"))
    T.check(got is not None and len(spans(got, "step")) in want_steps[r],
            f"2-rank failure: rank {r}'s .part: " +
            ("cut inside a line" if got is None else f"{len(spans(got, 'step'))} steps, want 25"))
s = T.run(["timeline", "summary", "--json", logs5])
n = [x["steps"] for x in json.loads(s.stdout)["ranks"]] if s.returncode == 0 else []
T.check(len(n) == 2 and n[0] in want_steps[0] and n[1] == 25,
        f"summary of a 2-rank failure: steps {n} ({s.stderr.strip()})")
bad = os.path.join(d, "bad.json")


def bad_case(text, want):
    open(bad, "w").write(text)
    r = T.run(["timeline", "summary", bad])
    line = r.stderr.strip()
    T.check(r.returncode == 2 and "\n" not in line and bad in line and want in line,
            f"bad timeline {text[:40]!r}: rc {r.returncode}: {line}")


bad_case('{"x": 1}\n', ":1: not a timeline")
bad_case('[\n{"name":"step","ph":"X","ts":1,"dur":-3,"pid":0,"tid":0}\n]\n', ":2: field 'dur'")
bad_case('[\n,{"name":"step","ph":"X","ts":"a","dur":3,"pid":0,"tid":0}\n]\n', ":2: field 'ts'")
bad_case('[\n{"name":"step",\n]\n', ":2: not a JSON object")
# text after the object: merge copied the line, and wrote a trace that is not JSON
bad_case('[\n{"name":"step","ph":"X","ts":1,"dur":3,"pid":0,"tid":0}},{"x":1}\n]\n',
         ":2: not a JSON object")
bad_case('[\n]\n{"name":"step"}\n', ":3: data after")
bad_case("", "empty file")
ev_line = '[\n{"name":"step","ph":"X","ts":%s,"dur":%s,"pid":%s,"tid":0%s}\n]\n'
bad_case(ev_line % ("1e999", "3", "0", ""), ":2: field 'ts'")  # inf: no time at all
bad_case(ev_line % ("1", "1e999", "0", ""), ":2: field 'dur'")
bad_case(ev_line % ("1", "3", "2.5", ""), ":2: field 'pid'")  # a rank is a whole number
bad_case(ev_line % ("1", "3", "0", ',"args":{"queued_us":-1e999}'), ":2: field 'args.queued_us'")
# one event is under 1 KiB: a 2 MiB line is no event (parsed, it took 40x its size)
bad_case('[\n{"name":"step","ph":"X","ts":1,"dur":3,"pid":0,"tid":0,"args":{"x":"' + "y" * (2 << 20)
         + '"}}\n]\n', ":2: line longer than")
bad_case('[\n{"name":"step","ph":"X","ts":1,"dur":3,"pid":0,"tid":0}\n]\n{"name":"st', ":4: data after")

# A rank killed inside a write(2) leaves its last line cut: the complete ones count.
cut = os.path.join(d, "cut", "timeline-0.json.part")
os.makedirs(os.path.dirname(cut))
ok_line = '{"name":"step","ph":"X","ts":%d,"dur":3,"pid":0,"tid":0}'
open(cut, "w").write("[\n" + "\n,".join(ok_line % i for i in range(3)) + '\n,{"name":"step","ph":"X","ts":9')
s = T.run(["timeline", "summary", "--json", os.path.dirname(cut)])
n = json.loads(s.stdout)["ranks"][0]["steps"] if s.returncode == 0 else -1
T.check(n == 3, f"a .part cut inside its last line: {n} steps, want 3 ({s.stderr.strip()})")
for args, want in ((["timeline", "merge", logs2], "--out"),
                   (["timeline", "summary"], "give a timeline"),
                   (["timeline", "frob", logs2], "unknown subcommand"),
                   (["timeline", "summary", os.path.join(d, "data")], "no timeline-<rank>.json"),
                   (["timeline", "merge", "--out", merged + "2", logs2, merged], "rank 0 is also in"),
                   (["timeline", "summary", logs2, merged], "rank 0 is also in"),
                   (["timeline", "summary", "--out", merged + "3", logs2], "--out"),
                   (["timeline", "merge", "--json", "--out", merged + "3", logs2], "--json"),
                   (["train", "--timeline=maybe"], "--timeline")):
    r = T.run(args)
    line = r.stderr.strip()
    T.check(r.returncode == 2 and "\n" not in line and want in line,
            f"{' '.join(args[:2])}: rc {r.returncode}: {line}")
T.check(not os.path.exists(merged + "3"), "a flag of the other subcommand was ignored")

# a big job's files, one argument each (a shell glob), not only its folder
many = os.path.join(d, "many")
os.makedirs(many)
for r in range(300):
    with open(os.path.join(many, f"timeline-{r}.json"), "w") as f:
        f.write('[\n{"name":"step","ph":"X","ts":1,"dur":2,"pid":%d,"tid":0}\n]\n' % r)
s = T.run(["timeline", "summary", "--json"] + [os.path.join(many, f"timeline-{r}.json") for r in range(300)])
n = len(json.loads(s.stdout)["ranks"]) if s.returncode == 0 else 0
T.check(n == 300, f"summary of 300 files: {n} ranks ({s.stderr.strip()})")
T.done()
