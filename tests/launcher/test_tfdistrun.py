"""tfdistrun: the exact --dry-run command, one-line errors for bad flags,
--check-build, and a real 2-rank run that matches plain mpirun exactly."""
import os
import shlex
import subprocess
import sys
import tempfile

import launchutil as lu

ROOT_PREFIX = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "


def tfdistrun(args, env, check_rc=0):
    r = subprocess.run([sys.executable, lu.TFDISTRUN] + args, env=env, capture_output=True,
                       text=True, timeout=60)
    if check_rc is not None and r.returncode != check_rc:
        raise AssertionError("tfdistrun %s: exit %d, expected %d\n%s%s"
                             % (" ".join(args), r.returncode, check_rc, r.stdout, r.stderr))
    return r


def base_env(**extra):
    env = {"PATH": "/usr/bin:/bin", "TFDIST": lu.TFDIST, "HOME": "/nonexistent"}
    env.update(extra)
    return env


def expect_equal(got, want, what):
    if got != want:
        raise AssertionError("%s:\n got: %s\nwant: %s" % (what, got, want))


def test_dry_run_exact():
    root = ROOT_PREFIX if os.geteuid() == 0 else ""
    env = base_env(TFDIST_FAULT_X="1", NCCL_DEBUG="WARN", NCCL_SOCKET_IFNAME="eth1",
                   OMP_NUM_THREADS="2", UNRELATED="no", TFDISTX="no")
    r = tfdistrun(["-np", "4", "-H", "node-a:2,node-b:2", "--network-interface", "eth1",
                   "--rsh-agent", "/opt/x/nsrsh", "-x", "EXTRA=a b", "-x", "UNRELATED",
                   "--dry-run", "train", "--epochs", "1", "--data-folder", "/d x"], env)
    want = (root + "mpirun -np 4 -H node-a:2,node-b:2 --bind-to none --map-by slot "
            "--mca btl_tcp_if_include eth1 --mca oob_tcp_if_include eth1 "
            "--mca plm_rsh_agent /opt/x/nsrsh "
            "-x NCCL_DEBUG -x NCCL_SOCKET_IFNAME -x OMP_NUM_THREADS -x PATH -x TFDIST_FAULT_X "
            "-x 'EXTRA=a b' -x UNRELATED "
            + lu.TFDIST + " train --epochs 1 --data-folder '/d x'\n")
    expect_equal(r.stdout, want, "dry run with hosts")
    expect_equal(r.stderr, "", "dry run stderr")

    # No hosts: localhost with -np slots; root variables already set are not repeated.
    env = base_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = tfdistrun(["-np", "3", "--bind-to", "core", "--map-by", "node", "--oversubscribe",
                   "--ssh-port", "2222", "--output-filename", "out dir", "--mpi-args",
                   "--mca btl self,tcp", "--dry-run", "train"], env)
    # OMPI_* are not forwarded with -x: mpirun passes its own MCA variables on.
    yld = "--mca mpi_yield_when_idle 1 " if 3 > (os.cpu_count() or 1) else ""
    want = ("mpirun -np 3 -H localhost:3 --bind-to core --map-by node --oversubscribe "
            + yld + "--mca plm_rsh_args '-p 2222' -x PATH --output-filename 'out dir' "
            "--mca btl self,tcp " + lu.TFDIST + " train\n")
    expect_equal(r.stdout, want, "dry run on localhost")

    # More local ranks than cores: waiting ranks yield the CPU; not otherwise.
    cores = os.cpu_count() or 1
    r = tfdistrun(["-np", str(cores + 1), "--dry-run", "train"], base_env())
    if "--mca mpi_yield_when_idle 1" not in r.stdout:
        raise AssertionError("no yield with %d ranks on %d cores: %s" % (cores + 1, cores, r.stdout))
    r = tfdistrun(["-np", str(cores), "--dry-run", "train"], base_env())
    if "yield" in r.stdout:
        raise AssertionError("yield with %d ranks on %d cores: %s" % (cores, cores, r.stdout))

    # A hostfile in Open MPI's format; -np defaults to the total slots.
    with tempfile.TemporaryDirectory() as d:
        hf = os.path.join(d, "hosts")
        with open(hf, "w", encoding="utf-8") as f:
            f.write("# cluster\nn1 slots=4\nn2:2   # two\n\nn3\n")
        r = tfdistrun(["--hostfile", hf, "--dry-run", "/bin/true"], base_env())
        want = root + "mpirun -np 7 -H n1:4,n2:2,n3:1 --bind-to none --map-by slot -x PATH /bin/true\n"
        expect_equal(r.stdout, want, "dry run with hostfile")
        with open(hf, "w", encoding="utf-8") as f:
            f.write("n1 slots=4\nn2 cpus=2\n")
        r = tfdistrun(["--hostfile", hf, "--dry-run", "train"], base_env(), check_rc=2)
        expect_equal(r.stderr, "tfdistrun: error: %s:2: unknown field 'cpus=2' (expected slots=N)\n"
                     % hf, "hostfile error")

    # The dry-run line is a shell command that parses back into the same words.
    r = tfdistrun(["-np", "2", "--dry-run", "train", "--outputs", "a'b"], base_env())
    words = shlex.split(r.stdout)
    expect_equal(words[-3:], ["train", "--outputs", "a'b"], "dry-run quoting")


BAD = [
    (["-np", "0", "train"], "-np: '0' is not a positive integer"),
    (["-np", "x", "train"], "-np: 'x' is not a positive integer"),
    (["-np"], "-np needs a value"),
    (["--frobnicate", "train"], "unknown option '--frobnicate'"),
    (["-np", "2"], "no command to run"),
    (["-H", "a:2", "--hostfile", "/x", "train"], "-H and --hostfile are exclusive"),
    (["-np", "5", "-H", "a:2,b:2", "train"], "-np 5 exceeds the 4 slots"),
    (["-H", "a:2,a:1", "train"], "host 'a' is listed twice"),
    (["-H", "a:zero", "train"], "slots of 'a': 'zero' is not a positive integer"),
    (["-H", "bad host", "train"], "'bad host' is not a host name"),
    (["-np", "1", "--bind-to", "wrong", "train"], "--bind-to: 'wrong' is not one of"),
    (["-np", "1", "--map-by", "ring", "train"], "--map-by: 'ring' is not one of"),
    (["-np", "1", "--network-interface", "eth1;rm", "train"], "is not an interface name"),
    (["-np", "1", "--ssh-port", "99999", "train"], "--ssh-port: 99999 is not a port number"),
    (["-np", "1", "-x", "9X=1", "train"], "-x: '9X=1' is not NAME or NAME=VALUE"),
    (["-np", "1", "-x", "SURELY_NOT_SET_VAR", "train"], "'SURELY_NOT_SET_VAR' is not set"),
    (["-np", "1", "--mpi-args", "'open", "train"], "--mpi-args: No closing quotation"),
    (["-np", "1", "/no/such/prog"], "command '/no/such/prog' is not an executable file"),
    (["-np", "1", "--tfdist", "/no/tfdist", "train"], "--tfdist: '/no/tfdist' is not an executable"),
    (["-np", "1", "--mpirun", "/no/mpirun", "train"], "--mpirun: '/no/mpirun' is not an executable"),
    (["--hostfile", "/no/hosts", "train"], "--hostfile /no/hosts: No such file or directory"),
    (["--dry-run=yes", "-np", "1", "train"], "--dry-run takes no value"),
    (["-np", "1", "-np", "2", "train"], "-np given twice"),
]


def test_bad_flags():
    for args, msg in BAD:
        # --dry-run first, so a check that failed to fire cannot start mpirun.
        full = args if "--dry-run=yes" in args else ["--dry-run"] + args
        r = tfdistrun(full, base_env(), check_rc=2)
        lines = r.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("tfdistrun: error: ") or msg not in lines[0]:
            raise AssertionError("tfdistrun %s: want one error line with %r, got %r"
                                 % (args, msg, r.stderr))
        expect_equal(r.stdout, "", "stdout of a bad call")


def test_check_build_and_help():
    r = tfdistrun(["--check-build"], base_env())
    for want in ("tfdistrun 0.1.0", "Launchers:", "[X] mpirun", "tfdist binary: " + lu.TFDIST,
                 "build:", "MPI"):
        if want not in r.stdout:
            raise AssertionError("--check-build lacks %r:\n%s" % (want, r.stdout))
    r = tfdistrun(["--help"], base_env())
    if not r.stdout.startswith("usage: tfdistrun") or "--dry-run" not in r.stdout:
        raise AssertionError("--help:\n" + r.stdout)


def test_real_run(tmp):
    data = os.path.join(tmp, "data")
    lu.write_learnable_set(data, 11, 1200, 300)
    flags = ["train", "--data-folder", data, "--epochs", "1", "--learning-rate", "0.05",
             "--progress", "off"]
    env = dict(os.environ)
    for k in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        env.pop(k, None)   # tfdistrun must supply them itself as root
    out_a, logs_a = os.path.join(tmp, "a-out"), os.path.join(tmp, "a-logs")
    r = subprocess.run(["timeout", "-k", "5", "60", sys.executable, lu.TFDISTRUN, "-np", "2",
                        "--verbose"] + flags + ["--outputs", out_a, "--logs", logs_a],
                       env=env, capture_output=True, text=True)
    sys.stdout.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise AssertionError("tfdistrun -np 2 failed: exit %d" % r.returncode)
    if "tfdistrun: " not in r.stderr or "mpirun -np 2" not in r.stderr:
        raise AssertionError("--verbose did not print the command")
    out_b, logs_b = os.path.join(tmp, "b-out"), os.path.join(tmp, "b-logs")
    lu.run(["mpirun", "-np", "2", "--bind-to", "none", lu.TFDIST] + flags
           + ["--outputs", out_b, "--logs", logs_b], 60)
    a, b = lu.final_acc(out_a), lu.final_acc(out_b)
    print("final_acc: tfdistrun %.4f, mpirun %.4f" % (a, b))
    expect_equal(a, b, "final_acc of tfdistrun vs mpirun")
    if not a > 0.3:
        raise AssertionError("final_acc %.4f: the run did not learn (chance is 0.1)" % a)
    lu.check_rank_logs(logs_a, 2, 1)
    expect_equal([x["rank"] for x in lu.run_ranks(out_a)], [0, 1], "ranks in run.json")


def main():
    test_dry_run_exact()
    test_bad_flags()
    test_check_build_and_help()
    with tempfile.TemporaryDirectory(prefix="tfdistrun-test.") as tmp:
        test_real_run(tmp)
    print("tfdistrun: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
