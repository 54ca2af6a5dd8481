"""Runs the README examples marked runnable, as written, so the docs cannot
drift from the code.

A block is runnable when the line before its opening fence is
`<!-- docs-test -->` (optionally `<!-- docs-test timeout=S -->`). In the block,
each line starting with `$ ` is a command (a trailing `\\` continues it), and
the lines after it are its documented output. A command must exit 0, or the
code its own trailing comment names (`$ tfdist train --batch-size 0   # exit 2`).
Key lines are checked: every documented output line starting with
`tfdist: error:`, `wrote `, `ok` or `FAILED` must appear in the command's
output exactly, and so must every documented line of an `ls` command; `...` marks lines left out, and lines with measured figures
(loss, samples/s, times) are not compared, as they depend on the CPU.

As root, the two variables the README names for Open MPI are set. Every
block runs in one scratch folder, in README order (README.md, then
launcher/README.md), so a later example sees an earlier one's outputs, as a
reader following along would. `build`, `launcher`, `examples` and `configs` are
links to the source and build trees, so `./build/cli/tfdist` works as written.

usage: docs_examples.py [--list] [README...]"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("TFDIST_SOURCE_ROOT",
                      os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TFDIST = os.path.abspath(os.environ.get("TFDIST", os.path.join(ROOT, "build", "cli", "tfdist")))
BUILD = os.path.dirname(os.path.dirname(TFDIST))
READMES = ["README.md", "launcher/README.md"]
MARK = re.compile(r"^<!-- docs-test(?P<opts>[^>]*)-->\s*$")
KEY = re.compile(r"^(tfdist: error:|wrote |ok |ok:|FAILED|simcluster:)")
EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
# a duration and a rate in a key line depend on the machine: "(0.8 s)", "(2.3 s, 71 MB/s)"
TIMING = re.compile(r"\(\d+(\.\d+)? s(, \d+ MB/s)?\)")


def norm(line):
    return TIMING.sub("(TIME)", line.strip())


def blocks(path):
    """(line number, options, [(command, [output lines])]) for each marked block."""
    lines = open(path, encoding="utf-8").read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m or i + 1 >= len(lines) or not lines[i + 1].lstrip().startswith("```"):
            i += 1
            continue
        opts = dict(kv.split("=", 1) for kv in m.group("opts").split() if "=" in kv)
        start = i + 2
        j = start
        while j < len(lines) and not lines[j].lstrip().startswith("```"):
            j += 1
        cmds = []
        k = start
        while k < j:
            text = lines[k].strip()
            if text.startswith("$ "):
                cmd = text[2:]
                while cmd.endswith("\\") and k + 1 < j:
                    k += 1
                    cmd = cmd[:-1] + " " + lines[k].strip()
                cmds.append((cmd, []))
            elif cmds:
                cmds[-1][1].append(text)
            k += 1
        out.append((i + 1, opts, cmds))
        i = j + 1
    return out


def scratch():
    d = tempfile.mkdtemp(prefix="tfdist-docs-")
    for name, target in (("build", BUILD), ("launcher", os.path.join(ROOT, "launcher")),
                         ("examples", os.path.join(ROOT, "examples")),
                         ("configs", os.path.join(ROOT, "configs"))):
        os.symlink(target, os.path.join(d, name))
    return d


def main(argv):
    listing = "--list" in argv
    readmes = [a for a in argv if not a.startswith("--")] or READMES
    found = [(r, b) for r in readmes for b in blocks(os.path.join(ROOT, r))]
    if listing:
        for r, (line, opts, cmds) in found:
            print(f"{r}:{line}: {len(cmds)} command(s)")
        return 0
    d = scratch()
    env = dict(os.environ, TFDIST_REGISTRY=os.path.join(d, "registry"), TFDIST=TFDIST)
    for name in ("OMPI_MCA_rmaps_base_oversubscribe", "OMPI_MCA_hwloc_base_binding_policy"):
        env.pop(name, None)  # the test suite's defaults, which a reader does not have
    if os.geteuid() == 0:  # as the README says to, before its mpirun lines
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    failures = 0
    t_all = time.monotonic()
    for readme, (line, opts, cmds) in found:
        limit = float(opts.get("timeout", 60))
        where = f"{readme}:{line}"
        for cmd, documented in cmds:
            m = EXIT.search(cmd)
            want = int(m.group(1)) if m else 0
            t0 = time.monotonic()
            try:
                p = subprocess.run(["bash", "-c", cmd], cwd=d, env=env, capture_output=True,
                                   text=True, timeout=limit, stdin=subprocess.DEVNULL)
                got, text = p.returncode, p.stdout + p.stderr
            except subprocess.TimeoutExpired as e:
                got, text = "timeout", (e.stdout or b"").decode(errors="replace")
            problems = []
            if got != want:
                problems.append(f"exit {got}, the README says {want}")
            have = {norm(s) for s in text.splitlines()}
            for doc in documented:
                key = KEY.match(doc) or cmd.startswith("ls ")
                if key and "..." not in doc and norm(doc) not in have:
                    problems.append(f"documented line not printed: {doc!r}")
            took = time.monotonic() - t0
            if problems:
                failures += 1
                print(f"FAIL {where}: $ {cmd}")
                for pr in problems:
                    print(f"     {pr}")
                print("     output:\n" + "\n".join("       | " + s for s in text.splitlines()[-15:]))
            else:
                print(f"ok   {where}: $ {cmd}  ({took:.1f} s)")
    ncmds = sum(len(b[2]) for _, b in found)
    print(f"{len(found)} block(s), {ncmds} command(s), {failures} failed, "
          f"{time.monotonic() - t_all:.0f} s (scratch folder {d})")
    if failures == 0:
        shutil.rmtree(d, ignore_errors=True)
    return 1 if failures or not found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
