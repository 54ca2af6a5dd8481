"""tfdistrun and Open MPI's garbled help relay: when a job aborts (MPI_Abort),
Open MPI 4.1.4 with PMIx 4.2.2 prints, about 3 times in 4 here,
'ORTE_ERROR_LOG: Out of resource|Data unpack would read past end of buffer in
file .../orte/util/show_help.c at line N' instead of MPI_Abort's box.
tfdistrun drops exactly that line once a rank has said 'tfdist: error:'.
A stand-in mpirun (--mpirun) checks the rule line by line: the notice after a
tfdist error goes, the same notice with no tfdist error before it stays (it may
be all that is left of a real error), any other ORTE_ERROR_LOG stays, a
partial progress line passes, the exit code is mpirun's. Then real 2-rank runs
with a bad --data-folder: exit 2, the error line, never the notice."""
import os
import stat
import subprocess
import sys
import tempfile

import launchutil as lu
import tfdtest as T

NOTICE_501 = ("[vm:28644] [[794,0],0] ORTE_ERROR_LOG: Data unpack would read past end of buffer "
              "in file ../../../orte/util/show_help.c at line 501")
NOTICE_507 = ("[vm:31012] [[7257,0],0] ORTE_ERROR_LOG: Out of resource in file "
              "../../../orte/util/show_help.c at line 507")
OTHER = ("[vm:28644] [[794,0],1] ORTE_ERROR_LOG: Data unpack would read past end of buffer in "
         "file ../../../../../orte/mca/grpcomm/direct/grpcomm_direct.c at line 351")
ERROR = "tfdist: error: rank 0: --data-folder /nonexistent: No such file or directory"


def fake_mpirun(folder, name, stderr_text, rc):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\nprintf '%%s' '%s' >&2\nexit %d\n" % (stderr_text.replace("'", ""), rc))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def tfdistrun(args, timeout=120):
    env = dict(os.environ, TFDIST=lu.TFDIST)
    return subprocess.run([sys.executable, lu.TFDISTRUN] + args, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_rule(tmp):
    text = ("\n".join([NOTICE_501, ERROR, NOTICE_501, OTHER, NOTICE_507]) + "\n" +
            "\repoch 1/2 [=====     ] 50%")
    r = tfdistrun(["-np", "2", "--mpirun", fake_mpirun(tmp, "after", text, 2), "train"])
    lines = r.stderr.splitlines()
    T.check(r.returncode == 2, "stand-in: exit %d, expected mpirun's 2" % r.returncode)
    T.check(lines.count(ERROR) == 1, "stand-in: the tfdist error line is not kept once: %r" % lines)
    T.check(lines.count(NOTICE_501) == 1 and lines.index(NOTICE_501) < lines.index(ERROR),
            "stand-in: the notice before the error must stay, the one after it go: %r" % lines)
    T.check(NOTICE_507 not in lines, "stand-in: the 'Out of resource' notice after the error stayed")
    T.check(OTHER in lines, "stand-in: another ORTE_ERROR_LOG (grpcomm_direct.c) was dropped")
    T.check(r.stderr.endswith("epoch 1/2 [=====     ] 50%"),  # text mode reads \r as \n
            "stand-in: the partial progress line did not pass: %r" % r.stderr[-60:])
    r = tfdistrun(["-np", "2", "--mpirun", fake_mpirun(tmp, "alone", NOTICE_507 + "\n", 1), "train"])
    T.check(r.returncode == 1 and NOTICE_507 in r.stderr.splitlines(),
            "stand-in: with no tfdist error the notice must stay: exit %d %r"
            % (r.returncode, r.stderr))


def test_real(tmp):
    for i in range(6):
        r = tfdistrun(["-np", "2", "train", "--data-folder", "/nonexistent", "--outputs",
                       os.path.join(tmp, "o"), "--progress", "off"])
        T.check(r.returncode == 2, "real run %d: exit %d, expected 2: %s" % (i, r.returncode, r.stderr))
        T.check("tfdist: error: rank 0: --data-folder /nonexistent" in r.stderr,
                "real run %d: no error line naming --data-folder: %s" % (i, r.stderr))
        T.check("ORTE_ERROR_LOG" not in r.stderr, "real run %d: %s" % (i, r.stderr))


def main():
    with tempfile.TemporaryDirectory(prefix="abort-noise.") as tmp:
        test_rule(tmp)
        test_real(tmp)


if __name__ == "__main__":
    main()
    T.done()
