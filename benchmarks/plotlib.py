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


def save_png(fig, out):
    """fig to out; prints out, as the scripts' last line."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".tmp.",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(out)
