"""The project's sbatch scripts on a real Slurm: munged, slurmctld and one
slurmd per simulated host (network namespace), all started here under one temp
folder (launcher/slurm/simcluster) and stopped by pid afterwards, on failure
and on SIGTERM too. Each job must reach COMPLETED, write every rank's log, and
reach the final_acc of the same job run by plain mpirun on one host, exactly.

The GPU scripts run with TFDIST_DEVICE=auto on simulated GPUs (gres backed by
character devices), so they exercise the allocation and srun, on the CPU.
Exit 77 when not root, namespaces cannot be made, or Slurm is not installed."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import launchutil as lu

# script, sbatch options, expected (host index, local rank) per rank
JOBS = [
    ("tfdist-cpu.sbatch", ["-N", "2", "--ntasks-per-node=1"], [(0, 0), (1, 0)]),
    ("tfdist-gpu-1node.sbatch", ["--gres=gpu:2", "--ntasks-per-node=2", "--cpus-per-task=1"],
     [(0, 0), (0, 1)]),
    ("tfdist-gpu-multinode.sbatch",
     ["-N", "2", "--gres=gpu:1", "--ntasks-per-node=1", "--cpus-per-task=1"], [(0, 0), (1, 0)]),
]


def need_slurm():
    for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "srun"):
        if not shutil.which(tool):
            print("SKIP: %s not installed (launcher/setup-debian.sh)" % tool)
            sys.exit(lu.SKIP)


def sim(state, *args, timeout=60):
    return lu.run([lu.SIMCLUSTER, args[0], state] + list(args[1:]), timeout)


def submit(state, tmp, script, opts, train_flags):
    name = script.split(".")[0]
    run_dir = os.path.join(tmp, "runs", name)
    env = dict(os.environ, TFDIST=lu.TFDIST, TFDIST_RUN_DIR=run_dir, TFDIST_DEVICE="auto",
               OMPI_MCA_btl_tcp_if_include="eth1", OMPI_MCA_mpi_yield_when_idle="1")
    out = lu.run([lu.SIMCLUSTER, "run", state, "sbatch", "--parsable", "--chdir", tmp,
                  "--output", os.path.join(tmp, name + "-%j.out")] + opts
                 + [os.path.join(lu.LAUNCHER, "slurm", script)] + train_flags, 30, env=env)
    job = out.strip().split(";")[0]
    if not re.fullmatch(r"[0-9]+", job):
        raise AssertionError("sbatch printed %r, not a job id" % out)
    return job, run_dir, os.path.join(tmp, "%s-%s.out" % (name, job))


def check_job(state, prefix, job, run_dir, out_file, want_ranks, ref_acc, epochs):
    end = sim(state, "wait", job, "150", timeout=160).strip()
    with open(out_file, encoding="utf-8") as f:
        text = f.read()
    print("---- %s\n%s----" % (out_file, text))
    if end != "COMPLETED":
        raise AssertionError("job %s ended %s" % (job, end))
    outputs, logs = os.path.join(run_dir, "outputs"), os.path.join(run_dir, "logs")
    got = [(r["host"], r["local_rank"]) for r in lu.run_ranks(outputs)]
    want = [("%sh%d" % (prefix, h), lr) for h, lr in want_ranks]
    if got != want:
        raise AssertionError("job %s ranks ran on %s, expected %s" % (job, got, want))
    lu.check_rank_logs(logs, len(want), epochs)
    acc = lu.final_acc(outputs)
    if acc != ref_acc:
        raise AssertionError("job %s final_acc %r != one-host mpirun %r" % (job, acc, ref_acc))
    if "final_acc %.4f" % acc not in text:
        raise AssertionError("job %s output lacks its final_acc line" % job)
    print("job %s COMPLETED, final_acc %.4f = reference, ranks on %s" % (job, acc, got))


def main():
    prefix = lu.prefix_for("ts")
    lu.need_root_netns(prefix + "probe")
    need_slurm()
    lu.on_signals_exit()
    state = tempfile.mkdtemp(prefix="tfdist-slurm.")
    try:
        tmp = os.path.join(state, "work")
        os.makedirs(tmp)
        data = os.path.join(tmp, "data")
        lu.write_learnable_set(data, 7, 1200, 300)
        epochs = 1
        flags = ["--data-folder", data, "--epochs", str(epochs), "--learning-rate", "0.05"]
        ref_out = os.path.join(tmp, "ref-out")
        lu.run(["mpirun", "-np", "2", "--bind-to", "none", lu.TFDIST, "train"] + flags
               + ["--progress", "off", "--outputs", ref_out, "--logs", os.path.join(tmp, "ref-logs")],
               60)
        ref_acc = lu.final_acc(ref_out)
        if not ref_acc > 0.3:
            raise AssertionError("reference final_acc %.4f: did not learn" % ref_acc)

        sim(state, "up", prefix, "2", "2")
        os.environ["SLURM_CONF"] = os.path.join(state, "slurm.conf")
        submitted = [submit(state, tmp, s, o, flags) + (w,) for s, o, w in JOBS]
        for job, run_dir, out_file, want in submitted:
            check_job(state, prefix, job, run_dir, out_file, want, ref_acc, epochs)
    finally:
        subprocess.run([lu.SIMCLUSTER, "down", state], check=False)
        shutil.rmtree(state, ignore_errors=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if any(line.startswith(prefix) for line in left.splitlines()):
        print("teardown left namespaces behind:\n" + left, file=sys.stderr)
        return 1
    print("slurm: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
