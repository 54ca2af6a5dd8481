"""`meson install --destdir`: what lands where, that the installed tfdist runs
without the build tree, that the installed launchers find it on PATH, and that
no installed file names the build or the DESTDIR folder (DESTDIR-clean)."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tfdtest as T  # noqa: E402

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(T.TFDIST)))  # build/cli/tfdist
PREFIX = "/usr/local"


def main():
    dest = tempfile.mkdtemp(prefix="tfdist-install-")
    p = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", dest],
                       capture_output=True, text=True, timeout=120)
    if not T.check(p.returncode == 0, f"meson install failed: {p.stderr.strip()[-400:]}"):
        T.done()
    root = dest + PREFIX
    want = ["bin/tfdist", "bin/tfdistrun", "bin/tfconfig-run", "share/man/man1/tfdist.1",
            "share/tfdist/configs/tutorial.json", "share/tfdist/slurm/tfdist-cpu.sbatch",
            "share/tfdist/slurm/tfdist-gpu-1node.sbatch",
            "share/tfdist/slurm/tfdist-gpu-multinode.sbatch"]
    for rel in want:
        path = os.path.join(root, rel)
        T.check(os.path.isfile(path), f"not installed: {rel}")
        if rel.startswith("bin/") or rel.endswith(".sbatch"):
            T.check(os.access(path, os.X_OK), f"not executable: {rel}")
    # Nothing installed may point back into the build tree or the staging folder.
    for top, _, files in os.walk(dest):
        for f in files:
            data = open(os.path.join(top, f), "rb").read()
            for bad in (dest.encode(), os.path.realpath(BUILD).encode()):
                T.check(bad not in data, f"{os.path.join(top, f)} names {bad.decode()}")
    # The installed binary runs from the staging folder alone: the same
    # version line as the built one, and a config file from datadir.
    env = dict(os.environ, PATH=os.path.join(root, "bin") + ":/usr/bin:/bin")
    env.pop("TFDIST", None)
    got = subprocess.run(["tfdist", "--version"], capture_output=True, text=True, env=env,
                         cwd=dest, timeout=60)
    ref = subprocess.run([T.TFDIST, "--version"], capture_output=True, text=True, timeout=60)
    T.check(got.returncode == 0 and got.stdout == ref.stdout and got.stdout.startswith("tfdist "),
            f"installed tfdist --version: rc {got.returncode}, {got.stdout!r} vs {ref.stdout!r}")
    # The launchers take the tfdist on PATH (the installed one, not the build's).
    dry = subprocess.run(["tfdistrun", "-np", "2", "--dry-run", "train", "--epochs", "1"],
                         capture_output=True, text=True, env=env, cwd=dest, timeout=60)
    T.check(dry.returncode == 0 and os.path.join(root, "bin", "tfdist") in dry.stdout,
            f"tfdistrun --dry-run: rc {dry.returncode}, {dry.stdout.strip()!r} {dry.stderr.strip()!r}")
    cfg = os.path.join(root, "share", "tfdist", "configs", "tutorial.json")
    bad = subprocess.run(["tfdist", "train", "--config", cfg, "--batch-size", "0"],
                         capture_output=True, text=True, env=env, cwd=dest, timeout=60)
    T.check(bad.returncode == 2 and "--batch-size" in bad.stderr,
            f"installed tfdist with the installed config: rc {bad.returncode}, {bad.stderr.strip()!r}")
    man = subprocess.run(["man", "-l", os.path.join(root, "share", "man", "man1", "tfdist.1")],
                         capture_output=True, text=True, env=dict(env, MANPAGER="cat"), timeout=60)
    T.check(man.returncode != 0 or "tfdist" in man.stdout, "the man page does not render")
    subprocess.run(["rm", "-rf", dest])
    T.done()


if __name__ == "__main__":
    main()
