"""Helpers for the TF_CONFIG tests: start `tfdist train` as a cluster of plain
processes (no mpirun), one per task, each with its own TF_CONFIG, as
Azure/Kubernetes start TensorFlow jobs; collect each task's exit code, stdout
and stderr; read model.h5 with h5py. Every process runs under
`timeout -k 5 S` in its own session, and every wait here is bounded; the
caller's `finally: cluster.kill()` ends whatever is left. Test-only."""
import json
import os
import signal
import socket
import subprocess
import time

import numpy as np

import idxgen
from tfdtest import max_abs_diff, tensors as weights  # noqa: F401 (the TF_CONFIG tests' names)

TFDIST = os.environ["TFDIST"]
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
SMALL = ["--first-layer-neurons", "64", "--second-layer-neurons", "32"]


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_spec(chief=1, worker=1, ps=0):
    """{"chief": [...], "worker": [...], "ps": [...]} on free local ports; empty kinds left out."""
    ports = free_ports(chief + worker + ps)
    spec, k = {}, 0
    for kind, n in (("chief", chief), ("worker", worker), ("ps", ps)):
        if n:
            spec[kind] = ["127.0.0.1:%d" % p for p in ports[k:k + n]]
            k += n
    return spec


def tf_config(spec, kind, index):
    return json.dumps({"cluster": spec, "task": {"type": kind, "index": index}})


def make_data(folder, seed=11, n_train=1200, n_test=200):
    """Learnable but not trivial random idx data (train and test share class
    prototypes; the noise keeps the loss from vanishing within an epoch)."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, size=(10, 784))
    return idxgen.write_shared_set(folder, rng, protos, 180, n_train, n_test)


def train_args(folder, data, extra=()):
    """tfdist train's flags: the same on every task of a cluster."""
    return (["train", "--data-folder", data, "--outputs", os.path.join(folder, "outputs"),
             "--logs", os.path.join(folder, "logs"), "--progress", "off", "--checkpoint-every", "0"]
            + SMALL + list(extra))


def run_plain(folder, data, extra=(), limit_s=60, env_extra=None):
    """One plain process, TF_CONFIG removed from its environment: (rc, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(env_extra or {})
    cmd = ["timeout", "-k", "5", str(limit_s), TFDIST] + train_args(folder, data, extra)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=limit_s + 15)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", "test: did not end within %d s" % (limit_s + 15)


def run_mpi(np_, folder, data, extra=(), limit_s=90):
    """`mpirun -np N tfdist train`: (rc, combined output)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    cmd = (["timeout", "-k", "5", str(limit_s)] + MPIRUN + ["-np", str(np_), TFDIST] +
           train_args(folder, data, extra))
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=limit_s + 15)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        return None, "test: mpirun did not end within %d s" % (limit_s + 15)


class Task:
    def __init__(self, kind, index, proc, out_path, err_path):
        self.kind, self.index, self.proc = kind, index, proc
        self.out_path, self.err_path = out_path, err_path
        self.rc = None
        self.ended_at = None

    @property
    def name(self):
        return "%s %d" % (self.kind, self.index)

    def stdout(self):
        return read_text(self.out_path)

    def stderr(self):
        return read_text(self.err_path)

    def poll(self):
        if self.rc is None:
            rc = self.proc.poll()
            if rc is not None:
                self.rc, self.ended_at = rc, time.monotonic()
        return self.rc

    def kill(self, sig=signal.SIGKILL):
        """Signals the task's whole session (the timeout wrapper and tfdist)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def running_sessions(sids):
    """Those of sessions sids with a thread that has not yet exited (a
    zombie has closed its files)."""
    left = set()
    for pid in os.listdir("/proc"):
        try:
            sid = int(proc_stat("/proc/%s" % pid)[3])
            if sid in sids and any(proc_stat("/proc/%s/task/%s" % (pid, tid))[0] not in "ZX"
                                   for tid in os.listdir("/proc/%s/task" % pid)):
                left.add(sid)
        except (OSError, ValueError, IndexError):
            continue  # not a process, or it ended while we looked
    return left


def proc_stat(folder):
    """The fields of folder/stat after the command name: state, ppid, pgrp, session, ..."""
    with open(folder + "/stat") as f:
        st = f.read()
    return st[st.rindex(")") + 2:].split()


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Cluster:
    """The tasks of one TF_CONFIG job. start() launches every task named in
    `which` (default: all tasks of spec); wait() bounds every wait."""

    def __init__(self, folder, spec):
        self.folder, self.spec = folder, spec
        self.tasks = []
        os.makedirs(folder, exist_ok=True)

    def start(self, args, limit_s=90, which=None, env_extra=None, order=None):
        kinds = [(k, i) for k in ("chief", "worker", "ps") for i in range(len(self.spec.get(k, [])))]
        if which is not None:
            kinds = [t for t in kinds if t in which]
        if order == "reverse":  # ps and workers first: tasks must wait for later peers
            kinds = kinds[::-1]
        for kind, index in kinds:
            env = dict(os.environ, TF_CONFIG=tf_config(self.spec, kind, index))
            for k in list(env):
                if k.startswith("OMPI_COMM_WORLD") or k.startswith("PMIX_"):
                    del env[k]
            env.update(env_extra or {})
            base = os.path.join(self.folder, "%s-%d" % (kind, index))
            out, err = open(base + ".out", "w"), open(base + ".err", "w")
            cmd = ["timeout", "-k", "5", str(limit_s), TFDIST] + list(args)
            p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
            out.close()
            err.close()
            self.tasks.append(Task(kind, index, p, base + ".out", base + ".err"))
        return self

    def task(self, kind, index):
        for t in self.tasks:
            if t.kind == kind and t.index == index:
                return t
        raise KeyError("%s %d" % (kind, index))

    def wait(self, limit_s, tasks=None):
        """Waits up to limit_s for the tasks (default all); True when all ended."""
        tasks = self.tasks if tasks is None else tasks
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            if all(t.poll() is not None for t in tasks):
                return True
            time.sleep(0.05)
        return all(t.poll() is not None for t in tasks)

    def kill(self):
        """Ends every task still running (SIGKILL to each session) and reaps it.
        Returns once no thread of those sessions runs: the SIGKILL orphans
        tfdist, which keeps its sockets (its listening port too) until it has
        died, after its `timeout` wrapper was reaped."""
        killed = [t for t in self.tasks if t.poll() is None]
        for t in killed:
            t.kill()
        for t in self.tasks:
            try:
                t.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            t.poll()
        t0 = time.monotonic()
        sessions = running_sessions({t.proc.pid for t in killed}) if killed else set()
        while sessions and time.monotonic() - t0 < 10:
            time.sleep(0.02)
            sessions = running_sessions(sessions)

    def summary(self):
        lines = []
        for t in self.tasks:
            err = t.stderr().strip().splitlines()
            lines.append("  %-8s rc %s; stderr: %s" % (t.name, t.rc, " | ".join(err[-3:])[-600:]))
        return "\n".join(lines)


def run_cluster(folder, spec, args, limit_s=90, order=None):
    """Starts every task, waits for all (bounded), kills leftovers: the Cluster."""
    c = Cluster(folder, spec)
    try:
        c.start(args, limit_s=limit_s, order=order)
        c.wait(limit_s + 10)
    finally:
        c.kill()
    return c


def try_weights(h5_path):
    """(weights, None) or (None, why)."""
    try:
        return weights(h5_path), None
    except Exception as e:  # a missing or torn file is a check failure, not a crash
        return None, "%s: %s" % (h5_path, e)


class Checks:
    """Collects failures; each is printed at once, prefixed FAIL."""

    def __init__(self):
        self.failures = []

    def check(self, cond, msg, detail=""):
        if cond:
            return True
        self.failures.append(msg)
        print("FAIL: " + msg, flush=True)
        if detail:
            print(detail, flush=True)
        return False

    def ok(self, msg):
        print("ok: " + msg, flush=True)

    def verdict(self):
        if self.failures:
            print("FAILED: %d check(s):" % len(self.failures))
            for m in self.failures:
                print("  - " + m)
            return 1
        print("all checks passed")
        return 0
