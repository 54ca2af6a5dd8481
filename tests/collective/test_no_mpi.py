"""No MPI in a TF_CONFIG task: a 2-task TF_CONFIG cluster (chief + worker,
ring allreduce over TCP) trains under LD_PRELOAD of mpi_trap.so, whose
MPI_Init and MPI_Init_thread leave a marker file and abort. The run must
complete (run.json Completed, a final_acc that is a number) with no marker.
A plain `tfdist train` (no launcher, no TF_CONFIG: a world of one) must do
the same. The control proves the trap works: `mpirun -np 1 tfdist train`
under the same preload fails and leaves a marker. argv[1]: the trap's path."""
import json
import math
import os
import subprocess
import sys
import tempfile

import tfcluster as TC

LIMIT_S = 60


def markers(d):
    return sorted(os.listdir(d))


def run_json(folder):
    try:
        with open(os.path.join(folder, "outputs", "run.json")) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": str(e)}


def main():
    trap = os.path.abspath(sys.argv[1])
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        TC.make_data(data)
        traps = os.path.join(tmp, "traps")
        os.makedirs(traps)
        env = {"LD_PRELOAD": trap, "TFDIST_MPI_TRAP_DIR": traps}

        folder = os.path.join(tmp, "cluster")
        c = TC.Cluster(folder, TC.cluster_spec(1, 1, 0))
        try:
            c.start(TC.train_args(folder, data, ["--epochs", "2", "--seed", "3"]),
                    limit_s=LIMIT_S, env_extra=env)
            C.check(c.wait(LIMIT_S + 10), "TF_CONFIG run did not end", c.summary())
        finally:
            c.kill()
        C.check(all(t.rc == 0 for t in c.tasks), "TF_CONFIG run: a task failed", c.summary())
        C.check(markers(traps) == [], "TF_CONFIG run started MPI: %s" % markers(traps),
                c.summary())
        rj = run_json(folder)
        acc = (rj.get("metrics") or {}).get("final_acc")
        C.check(rj.get("status") == "Completed", "TF_CONFIG run: run.json status %s"
                % rj.get("status"), json.dumps(rj)[:800])
        C.check(isinstance(acc, (int, float)) and not math.isnan(acc) and 0 <= acc <= 1,
                "TF_CONFIG run: final_acc %r" % acc)
        if not C.failures:
            C.ok("TF_CONFIG cluster of 2: Completed, final_acc %.4f, MPI never started" % acc)

        # A plain run: no launcher, no MPI.
        plain = os.path.join(tmp, "plain")
        rc, out, err = TC.run_plain(plain, data, ["--epochs", "1"], limit_s=LIMIT_S, env_extra=env)
        rj = run_json(plain)
        acc = (rj.get("metrics") or {}).get("final_acc")
        C.check(rc == 0, "plain run: exit %s" % rc, err[-1500:])
        C.check(markers(traps) == [], "plain run started MPI: %s" % markers(traps))
        C.check(rj.get("status") == "Completed" and isinstance(acc, (int, float)) and
                not math.isnan(acc), "plain run: status %s, final_acc %r" % (rj.get("status"), acc))
        if rc == 0 and markers(traps) == []:
            C.ok("plain run: Completed, MPI never started")

        # The control: the same trap under mpirun fires.
        ctl = os.path.join(tmp, "control")
        cmd_env = dict(os.environ, **env)
        cmd_env.pop("TF_CONFIG", None)
        cmd = (["timeout", "-k", "5", str(LIMIT_S)] + TC.MPIRUN +
               ["-np", "1", "-x", "LD_PRELOAD", "-x", "TFDIST_MPI_TRAP_DIR", TC.TFDIST] +
               TC.train_args(ctl, data, ["--epochs", "1"]))
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=cmd_env, timeout=LIMIT_S + 15)
        fired = [m for m in markers(traps) if m.startswith("MPI_Init")]
        C.check(p.returncode != 0, "control: mpirun -np 1 under the trap exited 0",
                p.stdout[-1500:])
        C.check(bool(fired), "control: the trap did not fire under mpirun -np 1 (markers %s)"
                % markers(traps), p.stdout[-1500:])
        if fired:
            C.ok("control: mpirun -np 1 tripped the trap (%s)" % ", ".join(fired))
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
