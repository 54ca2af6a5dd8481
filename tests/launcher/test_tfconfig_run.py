"""tfconfig-run: the --dry-run plan (tasks to hosts round robin, ports per
host, each task's TF_CONFIG, ssh for other hosts), one-line errors for bad
flags (exit 2), a real chief + worker + ps run on this host whose weights
equal a plain mpirun -np 2 ring run's bit for bit, with every output line
prefixed by its task, and a task that fails (test switch) making the
launcher exit 1 with every task gone."""
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time

import launchutil as lu

TFCONFIG_RUN = os.path.join(lu.LAUNCHER, "tfconfig-run")


def launch(args, env=None, timeout=120):
    return subprocess.run([sys.executable, TFCONFIG_RUN] + args, capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ))


def test_dry_run():
    r = launch(["--workers", "2", "--ps", "1", "--evaluator", "1", "-H", "nodea,nodeb", "--port", "3000",
                "--rsh-agent", "/opt/rsh -q", "--tfdist", "/x/tfdist", "--dry-run",
                "train", "--epochs", "1"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    want = [("chief", 0, "nodea"), ("worker", 0, "nodeb"), ("worker", 1, "nodea"), ("ps", 0, "nodeb"),
            ("evaluator", 0, "nodea")]
    assert len(lines) == 5, lines
    cluster = {"chief": ["nodea:3000"], "worker": ["nodeb:3000", "nodea:3001"], "ps": ["nodeb:3001"]}
    for line, (kind, index, host) in zip(lines, want):
        head, _, cmd = line.partition(": ")
        assert head == "%s %d on %s" % (kind, index, host), line
        words = shlex.split(cmd)
        assert words[:3] == ["/opt/rsh", "-q", host], words
        # The job's secret comes on the remote shell's stdin, never in a command line.
        assert "TFDIST_SECRET=" not in line, line
        shell = shlex.split(words[3])
        assert shell[:9] == ["IFS=", "read", "-r", "TFDIST_SECRET", "&&", "export", "TFDIST_SECRET",
                             "&&", "exec"], shell
        remote = shell[9:]
        assert remote[0] == "env" and remote[1].startswith("TF_CONFIG="), remote
        conf = json.loads(remote[1][len("TF_CONFIG="):])
        assert conf == {"cluster": cluster, "task": {"type": kind, "index": index}}, conf
        assert remote[2:] == ["/x/tfdist", "train", "--epochs", "1"], remote
    print("dry run: 5 tasks on 2 hosts, ports 3000/3001, TF_CONFIGs exact (no evaluator in the cluster)")


def test_errors():
    for args, words in ((["--workers", "x", "train"], "--workers"),
                        (["--chief", "2", "train"], "--chief"),
                        (["--evaluator", "2", "train"], "--evaluator"),
                        (["--chief", "0", "--workers", "0", "train"], "nobody"),
                        (["-H", "a b", "train"], "host"),
                        (["--port", "0", "train"], "--port"),
                        (["--ps", "1"], "COMMAND"),
                        (["--bogus", "1", "train"], "--bogus")):
        r = launch(args)
        err = r.stderr.strip()
        assert r.returncode == 2 and "\n" not in err and words in err, (args, r.returncode, err)
    print("bad flags: exit 2, one line each")


def free_port_run(n):
    """A first port with n free ones after it (tasks on one host count up)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise AssertionError("no run of %d free ports" % n)


def test_real_run(tmp, data):
    out = os.path.join(tmp, "tfc")
    flags = ["train", "--data-folder", data, "--epochs", "1", "--batch-size", "10", "--seed", "7",
             "--learning-rate", "0.05", "--progress", "off", "--checkpoint-every", "0"]
    r = launch(["--workers", "1", "--ps", "1", "--evaluator", "1", "--port", str(free_port_run(4)),
                "--tfdist", lu.TFDIST] + flags + ["--outputs", out, "--logs",
                                                  os.path.join(tmp, "tfc-logs")])
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    tags = ("[chief 0", "[worker 0", "[ps 0", "[evaluator 0")
    assert lines and all(l.split("] ", 1)[0] in tags for l in lines), lines
    final = [l for l in lines if l.startswith("[chief 0] final_acc")]
    scored = [l for l in lines if l.startswith("[evaluator 0] evaluator: final_eval")]
    assert final and scored, lines
    # the sidecar scores the final model as the chief's last validation did
    assert "accuracy %s " % final[0].split()[-1] in scored[0], (final, scored)
    ref = os.path.join(tmp, "mpi")
    lu.run(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", lu.TFDIST] + flags +
           ["--allreduce", "ring", "--outputs", ref, "--logs", os.path.join(tmp, "mpi-logs")], 120)
    import h5py
    import numpy as np
    with h5py.File(os.path.join(out, "model", "model.h5"), "r") as a, \
            h5py.File(os.path.join(ref, "model", "model.h5"), "r") as b:
        for layer in ("dense", "dense_1", "dense_2"):
            for kind in ("kernel:0", "bias:0"):
                x = np.array(a["model_weights"][layer][layer][kind])
                y = np.array(b["model_weights"][layer][layer][kind])
                assert np.array_equal(x, y), "%s/%s differs from mpirun's" % (layer, kind)
    print("real run: chief + worker + ps weights equal mpirun -np 2 (ring) bit for bit")


def test_failing_task(tmp, data):
    env = dict(os.environ, TFDIST_FAULT_FAIL_RANK="1", TFDIST_FAULT_FAIL_STEP="3")
    t0 = time.monotonic()
    r = launch(["--workers", "1", "--ps", "1", "--port", str(free_port_run(3)), "--grace", "20",
                "--tfdist", lu.TFDIST, "train", "--data-folder", data, "--epochs", "50",
                "--progress", "off", "--timeout", "10",
                "--outputs", os.path.join(tmp, "fail"), "--logs", os.path.join(tmp, "fail-logs")],
               env=env)
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr)
    assert "worker 0 exited with 1" in r.stderr, r.stderr
    assert took < 30, "took %.1f s" % took
    left = subprocess.run(["pgrep", "-f", os.path.join(tmp, "fail")], capture_output=True,
                          text=True).stdout.split()
    assert not left, "tasks left running: %s" % left
    print("failing task: launcher exit 1 after %.1f s, nothing left running" % took)


def test_secret():
    """Each job's tasks get one random secret (64 hex digits), a new one per job;
    a TFDIST_SECRET the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "TFDIST_SECRET"}
    seen = []
    for _ in range(2):
        r = launch(["--chief", "1", "--workers", "1", "sh", "-c", "echo secret $TFDIST_SECRET"],
                   env=env)
        got = sorted(set(w for line in r.stdout.splitlines() if "secret" in line
                         for w in line.split()[-1:]))
        assert r.returncode == 0 and len(got) == 1 and len(got[0]) == 64, (r.stdout, r.stderr)
        int(got[0], 16)
        seen.append(got[0])
    assert seen[0] != seen[1], seen
    r = launch(["--chief", "1", "--workers", "0", "sh", "-c", "echo secret $TFDIST_SECRET"],
               env=dict(env, TFDIST_SECRET="mine-0123456789abcdef"))
    assert "secret mine-0123456789abcdef" in r.stdout, r.stdout
    print("secret: one per job, 64 hex digits, the same for every task; the user's kept")


def main():
    test_dry_run()
    test_errors()
    test_secret()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        lu.write_learnable_set(data, 5, 600, 100)
        test_real_run(tmp, data)
        test_failing_task(tmp, data)
    print("tfconfig-run: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
