"""A Python virtual environment with the independent readers the show tests
compare against (TensorBoard, onnx, ONNX Runtime), made once and reused:
$TFDIST_VENV, else ~/.cache/tfdist-venv, from /usr/bin/python3 -m venv and pip.
Test-only. reexec(modules) runs the calling test again under the venv's
Python unless those modules import already; when the venv cannot be made
(offline, no python3-venv) the test is skipped (exit 77)."""
import fcntl
import importlib.util
import os
import subprocess
import sys

PACKAGES = ["numpy", "h5py", "tensorboard", "onnx", "onnxruntime"]


def venv_dir():
    return os.environ.get("TFDIST_VENV") or os.path.expanduser("~/.cache/tfdist-venv")


def _has(python, modules):
    code = "import " + ", ".join(modules)
    return subprocess.run([python, "-c", code], capture_output=True, timeout=300).returncode == 0


def ensure(modules):
    """The venv's python with modules importable, or None (and why on stderr)."""
    try:
        return _ensure(modules)
    except OSError as e:
        print(f"venv: {venv_dir()}: {e}", file=sys.stderr)
        return None


def _ensure(modules):
    d = venv_dir()
    py = os.path.join(d, "bin", "python")
    os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
    with open(d + ".lock", "w") as lock:  # tests run in parallel: one makes it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(py) and _has(py, modules):
            return py
        steps = [] if os.path.exists(py) else [["/usr/bin/python3", "-m", "venv", d]]
        steps.append([py, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + PACKAGES)
        for cmd in steps:
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                print(f"venv: {' '.join(cmd[:3])}: {e}", file=sys.stderr)
                return None
            if p.returncode != 0:
                tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
                print(f"venv: {' '.join(cmd[:4])} failed: {tail[0]}", file=sys.stderr)
                return None
        return py if _has(py, modules) else None


def reexec(modules):
    if all(importlib.util.find_spec(m) for m in modules):
        return
    py = ensure(modules)
    if py is None:
        print(f"SKIP: cannot make a venv with {', '.join(modules)} in {venv_dir()}")
        sys.exit(77)
    os.execv(py, [py] + sys.argv)
