"""What the benchmark plot scripts share: their command line (FILE.json
[--out=FILE.png]) and a crash-safe PNG write (a fresh temp name from mkstemp
beside the target, never through a link; fsynced, then renamed)."""
import os
import sys
import tempfile


def parse_args(argv, name):
    """(FILE.json, FILE.png): the PNG goes beside the JSON unless --out= says."""
    usage = f"usage: {name} FILE.json [--out=FILE.png]"
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(f"{usage}\n  draws FILE.json into FILE.png beside it (or --out=FILE.png)")
        sys.exit(0)
    args = [a for a in argv[1:] if not a.startswith("--out=")]
    outs = [a[6:] for a in argv[1:] if a.startswith("--out=")]
    if len(args) != 1:
        print(usage, file=sys.stderr)
        sys.exit(2)
    return args[0], outs[0] if outs else os.path.splitext(args[0])[0] + ".png"


def write_atomic(out, write):
    """write(f) into a fresh temp name beside out (mkstemp: never through a
    link), fsynced, then renamed over out; the temp file goes on failure."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".tmp.",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def save_png(fig, out):
    """fig to out; prints out, as the scripts' last line."""
    write_atomic(out, lambda f: fig.savefig(f, format="png"))
    print(out)
