"""`tfdist eval --confusion-png FILE` (issue 22). The PNG is decoded here by
hand (chunk CRCs, IHDR, zlib, the five PNG row filters: the format's spec, not
tfdist's writer) and checked against eval's own JSON confusion matrix: the
size (10 cells of 32 px and 11 grid lines: 331 x 331), the grey grid, every
cell one flat colour, each cell's colour the documented one for its
row-normalised count, the shading monotone in that fraction across all 100
cells, and a trained model's diagonal the darkest cell of its row. Bad paths
(a planted symbolic link, a missing folder, a folder at the path) are one
error line naming the flag, exit 2, with the link and its target untouched."""
import json
import os
import struct
import zlib

import numpy as np

import ckhelp as C
import tfdtest as T

CELL, N = 32, 10
SIZE = N * (CELL + 1) + 1
LO, HI, GRID = np.array([255, 255, 255]), np.array([8, 48, 107]), 160


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_read(path):
    """(height, width, channels) uint8 array from an 8-bit grey or RGB PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
    pos, idat, ihdr, chunks = 8, b"", None, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"{kind} CRC"
        chunks.append(kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", f"chunk order {chunks}"
    w, h, depth, ctype, comp, filt, inter = ihdr
    assert depth == 8 and ctype in (0, 2) and comp == filt == inter == 0, f"IHDR {ihdr}"
    ch = 3 if ctype == 2 else 1
    raw, stride = zlib.decompress(idat), w * ch
    assert len(raw) == h * (stride + 1), "IDAT size"
    out, prev = np.zeros((h, stride), np.uint8), [0] * stride
    for y in range(h):
        f, line = raw[y * (stride + 1)], list(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            c = prev[x - ch] if x >= ch else 0
            pred = [0, a, prev[x], (a + prev[x]) // 2, paeth(a, prev[x], c)][f]
            line[x] = (line[x] + pred) & 255
        out[y], prev = line, line
    return out.reshape(h, w, ch)


def bad(p, what):
    T.check(p.returncode == 2 and C.one_error_line(p) and "--confusion-png" in p.stderr,
            f"{what}: rc {p.returncode}, stderr {p.stderr.strip()!r}")


d = T.tmpdir()
data = C.make_data(os.path.join(d, "data"), n_train=600, n_test=1000)
out = os.path.join(d, "out")
p = C.train(d, data, out, ["--epochs", "3"])
T.check(p.returncode == 0, f"training failed: {p.stderr.strip()}")
model = os.path.join(out, "model")
pics = os.path.join(d, "pics")
os.makedirs(pics)
png = os.path.join(pics, "confusion.png")
open(png, "wb").write(b"an older file, replaced whole\n")

p = T.run(["eval", "--model", model, "--data-folder", data, "--json", "--confusion-png", png])
T.check(p.returncode == 0, f"eval --json --confusion-png: {p.stderr.strip()}")
ev = json.loads(p.stdout)
T.check(ev.get("confusion_png") == png, "JSON lacks confusion_png")
cm = np.array(ev["confusion_matrix"], dtype=np.int64)
frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
T.check(cm.sum() == 1000 and ev["accuracy"] > 0.5, f"not a trained model: {ev['accuracy']}")
T.check((frac > 0).sum() > N and ((frac > 0) & (frac < 1)).any(),
        "the matrix is too plain to test shading")

img = png_read(png)
T.check(img.shape == (SIZE, SIZE, 3), f"image shape {img.shape}, expected ({SIZE}, {SIZE}, 3)")
lines = np.arange(0, SIZE, CELL + 1)
T.check((img[lines, :, :] == GRID).all() and (img[:, lines, :] == GRID).all(),
        "the 1 px grid is not grey 160 everywhere")
colour = np.zeros((N, N, 3), int)
for r in range(N):
    for c in range(N):
        cell = img[r * (CELL + 1) + 1:(r + 1) * (CELL + 1), c * (CELL + 1) + 1:(c + 1) * (CELL + 1)]
        T.check(cell.shape == (CELL, CELL, 3) and (cell == cell[0, 0]).all(),
                f"cell ({r},{c}) is not one flat {CELL}x{CELL} colour")
        colour[r, c] = cell[0, 0]
        want = LO + (HI - LO) * frac[r, c]
        T.check(np.abs(colour[r, c] - want).max() <= 0.5 + 1e-9,
                f"cell ({r},{c}) fraction {frac[r, c]:.4f}: colour {colour[r, c]}, want {want}")
# Monotone across all cells: a larger fraction is never lighter, and a
# fraction larger by over 1/247 (one step of the red channel) is darker.
lum = colour @ np.array([0.299, 0.587, 0.114])
f, l = frac.ravel(), lum.ravel()
for i in range(f.size):
    for j in range(f.size):
        if f[i] > f[j]:
            T.check(l[i] <= l[j] and (f[i] - f[j] <= 1 / 247 or l[i] < l[j]),
                    f"cells {divmod(i, N)} and {divmod(j, N)}: fractions {f[i]:.4f} > {f[j]:.4f} "
                    f"but luminance {l[i]:.1f} vs {l[j]:.1f}")
for r in range(N):
    if cm[r].argmax() == r:
        T.check(lum[r, r] == lum[r].min(), f"row {r}: the diagonal is not the darkest cell")
T.check(sum(cm[r].argmax() == r for r in range(N)) >= 8, "the model's diagonal is not dominant")

# Text mode names the file it wrote.
p = T.run(["eval", "--model", model, "--data-folder", data, "--confusion-png", png])
T.check(p.returncode == 0 and f"wrote {png} ({SIZE}x{SIZE})" in p.stdout.splitlines(),
        f"text mode: rc {p.returncode}, no 'wrote' line: {p.stdout[-200:]!r}")
T.check(np.array_equal(png_read(png), img), "a second eval drew a different picture")
try:  # a second reader, where matplotlib is installed: it must see the same pixels
    import matplotlib.image
    mpl = np.round(matplotlib.image.imread(png) * 255).astype(int)
    T.check(np.array_equal(mpl, img.astype(int)), "matplotlib reads other pixels than png_read")
except ImportError:
    pass

# A planted link is refused before any work: it stays a link to an intact victim.
victim = os.path.join(d, "victim.txt")
open(victim, "wb").write(b"keep me\n")
link = os.path.join(pics, "link.png")
os.symlink(victim, link)
p = T.run(["eval", "--model", model, "--data-folder", data, "--confusion-png", link])
bad(p, "a symbolic link at the path")
T.check(p.stdout == "" and os.path.islink(link) and os.readlink(link) == victim and
        open(victim, "rb").read() == b"keep me\n", "the link or its victim was touched")
dangling = os.path.join(pics, "dangling.png")
os.symlink(os.path.join(d, "nowhere.png"), dangling)
bad(T.run(["eval", "--model", model, "--data-folder", data, "--confusion-png", dangling]),
    "a dangling link")
T.check(not os.path.exists(os.path.join(d, "nowhere.png")), "written through a dangling link")
bad(T.run(["eval", "--model", model, "--data-folder", data, "--confusion-png",
           os.path.join(d, "no-such-folder", "c.png")]), "a missing folder")
bad(T.run(["eval", "--model", model, "--data-folder", data, "--confusion-png", pics]),
    "a folder at the path")
T.check(sorted(os.listdir(pics)) == ["confusion.png", "dangling.png", "link.png"],
        f"left behind in the folder: {sorted(os.listdir(pics))}")
C.finish(d)
