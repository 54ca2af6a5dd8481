"""tfdist serve's keys and TLS (SPEC "Deployment (scoring)": Azure ML's
Authorization: Bearer <key>, a primary and a secondary, over HTTPS), checked
with curl against a test CA made here with openssl: 200 with either key, 401
with WWW-Authenticate without one or with a wrong one, GET / open. A key file
others may read, half a TLS pair and a certificate GnuTLS refuses stop the
start. And a model whose outputs are not finite gets a 500, never class 0."""
import json
import os
import shutil
import subprocess

import h5py

import tfdtest as T
import serveclient

d = T.tmpdir()
MODEL = T.small_model(d, 4)
KEY1, KEY2 = "primary-0123456789abcdefghijklmnop", "secondary-zyxwvutsrqponmlkjihgfedc"
ROW = json.dumps({"data": [[0.25] * 784]})


def sh(args, what):
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=d)
    T.check(r.returncode == 0, f"{what}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r


# ---- a test CA and a certificate for 127.0.0.1 -----------------------------------
ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
sh(["openssl", "req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                                       "-subj", "/CN=tfdist test CA"], "openssl: the CA")
sh(["openssl", "req"] + ec + ["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"],
   "openssl: the server's request")
with open(os.path.join(d, "ext"), "w") as f:
    f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
sh(["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
    "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext"], "openssl: signing")
keys = os.path.join(d, "keys")
with open(keys, "w") as f:
    f.write(f"# primary, then secondary\n{KEY1}\n\n{KEY2}\r\n")
os.chmod(keys, 0o600)
if T.failures:
    T.done()
CERT, KEY, CA = (os.path.join(d, n) for n in ("srv.pem", "srv.key", "ca.pem"))


def curl(url, key=None, data=None, ca=CA, extra=()):
    """(exit code, HTTP status, headers text, body) of one curl request."""
    args = ["curl", "-sS", "--max-time", "10", "-D", "-", "-o", os.path.join(d, "body"),
            "-w", "\n%{http_code}"] + (["--cacert", ca] if ca else []) + list(extra)
    if key is not None:
        args += ["-H", f"Authorization: Bearer {key}"]
    if data is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", data]
    r = subprocess.run(args + [url], capture_output=True, text=True, errors="replace", timeout=20)
    head, _, code = r.stdout.rpartition("\n")
    body = open(os.path.join(d, "body"), "rb").read() if os.path.exists(os.path.join(d, "body")) else b""
    if os.path.exists(os.path.join(d, "body")):
        os.remove(os.path.join(d, "body"))
    return r.returncode, int(code) if code.isdigit() else 0, head.lower(), body


def check_https(srv):
    T.check(srv.line.startswith("serving ") and f"https://127.0.0.1:{srv.port}" in srv.line,
            f"start-up line: {srv.line!r}")
    base = f"https://127.0.0.1:{srv.port}"
    for what, key in (("primary key", KEY1), ("secondary key", KEY2)):
        rc, st, h, b = curl(base + "/score", key, ROW)
        T.check(rc == 0 and st == 200, f"HTTPS /score with the {what}: curl {rc} status {st} {b[:200]!r}")
        if st == 200:
            c = serveclient.loads(b)
            T.check(isinstance(c, list) and len(c) == 1 and c[0] in range(10), f"{what}: {c}")
    for what, key in (("no key", None), ("a wrong key", "wrong-0123456789abcdefghijklmnop"),
                      ("the primary key with a byte more", KEY1 + "x"),
                      ("the primary key cut", KEY1[:-1]), ("an empty key", "")):
        for path, data in (("/score", ROW), ("/v1/models/model", None),
                           ("/v1/models/model:predict", json.dumps({"instances": [[0.5] * 784]}))):
            rc, st, h, b = curl(base + path, key, data)
            T.check(st == 401 and "www-authenticate: bearer" in h,
                    f"HTTPS {path} with {what}: status {st}, headers {h[:200]!r}")
            # only the headers a 401 has (an uninitialised Allow once leaked memory here)
            names = sorted(ln.split(":")[0] for ln in h.splitlines()[1:] if ":" in ln)
            T.check(names == ["connection", "content-length", "content-type", "date",
                              "www-authenticate"], f"HTTPS {path} with {what}: headers {names}")
            if st == 401:
                msg = serveclient.loads(b).get("error", "")
                T.check("Bearer" in msg and "\n" not in msg, f"401 message: {msg!r}")
    rc, st, h, b = curl(base + "/", None)
    T.check(st == 200 and b == b"Healthy\n", f"HTTPS GET / without a key: {st} {b!r}")
    rc, st, h, b = curl(base + "/", None, ca=None)
    T.check(rc != 0 and st == 0, f"HTTPS without the test CA: curl {rc} status {st} (want a refusal)")
    rc, st, h, b = curl(f"http://127.0.0.1:{srv.port}/", None, ca=None)
    T.check(st != 200, f"plain HTTP to the HTTPS port: status {st}")


srv = None
try:
    srv = serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--tls-cert", CERT,
                                        "--tls-key", KEY, "--auth-key-file", keys], d, "tls")
    check_https(srv)
    rc, _ = srv.stop(15, 8)
    T.check(rc == 0, f"HTTPS server: SIGTERM exit {rc}")
except Exception as e:  # noqa: BLE001
    T.check(False, f"HTTPS server: {type(e).__name__}: {e}")
finally:
    if srv is not None and srv.p.poll() is None:
        srv.stop()

# ---- keys over plain HTTP (behind a proxy that ends TLS) --------------------------
srv = None
try:
    srv = serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--auth-key-file", keys],
                             d, "keys-http")
    T.check(f"http://127.0.0.1:{srv.port}" in srv.line, f"start-up line: {srv.line!r}")
    base = f"http://127.0.0.1:{srv.port}"
    T.check(curl(base + "/score", KEY2, ROW, ca=None)[1] == 200, "HTTP /score with the secondary key")
    T.check(curl(base + "/score", None, ROW, ca=None)[1] == 401, "HTTP /score without a key")
    T.check(curl(base + "/score", None, ROW, ca=None, extra=("-H", f"Authorization: Basic {KEY1}"))[1]
            == 401, "HTTP /score with the key as Basic")
finally:
    if srv is not None:
        srv.stop()


# ---- refused at start: one line, exit 2 ---------------------------------------------
def cli_error(label, args, *needles):
    r = T.run(["serve", "--model", MODEL, "--port", "0"] + args, timeout=15)
    err = r.stderr.strip()
    T.check(r.returncode == 2 and err.startswith("tfdist: error:") and "\n" not in err,
            f"{label}: exit {r.returncode}, stderr {err!r}")
    for n in needles:
        T.check(n in err, f"{label}: {n!r} not in {err!r}")


open_keys = os.path.join(d, "keys-644")
shutil.copy(keys, open_keys)
os.chmod(open_keys, 0o644)
cli_error("a key file others can read", ["--auth-key-file", open_keys], open_keys, "chmod 600")
short = os.path.join(d, "keys-short")
with open(short, "w") as f:
    f.write("short\n")
os.chmod(short, 0o600)
cli_error("a key of 5 characters", ["--auth-key-file", short], short + ":1")
empty = os.path.join(d, "keys-empty")
open(empty, "w").close()
os.chmod(empty, 0o600)
cli_error("a key file without keys", ["--auth-key-file", empty], "no keys")
cli_error("a missing key file", ["--auth-key-file", os.path.join(d, "nope")], "nope")
cli_error("--tls-cert alone", ["--tls-cert", CERT], "--tls-key")
cli_error("a certificate that is not one", ["--tls-cert", keys, "--tls-key", KEY], "HTTPS")

# ---- a model whose outputs are not finite: 500, never class 0 -----------------------
nan_dir = os.path.join(d, "nan-model")
os.makedirs(nan_dir)
shutil.copy(os.path.join(MODEL, "model.h5"), os.path.join(nan_dir, "model.h5"))
with h5py.File(os.path.join(nan_dir, "model.h5"), "r+") as f:
    g = f["model_weights"]
    last = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["layer_names"]][-1]
    # Finite weights (a model with NaN or Inf weights is refused at load) whose
    # outputs overflow: the logits of classes 3 and 4 are 3e38 plus a positive
    # sum of 3e38s, +inf, so the softmax is inf - inf = NaN.
    kernel, bias = g[last][last]["kernel:0"], g[last][last]["bias:0"]
    k, b = kernel[...], bias[...]
    k[:, 3:5] = 3e38
    b[3:5] = 3e38
    kernel[...], bias[...] = k, b
    for a in list(f.attrs):  # without tfdist's attributes, as a file Keras wrote
        if a.startswith("tfdist"):
            del f.attrs[a]
srv = None
try:
    srv = serveclient.Server(T.TFDIST, ["--model", nan_dir, "--port", "0", "--access-log", "off"],
                             d, "nan")
    c = srv.conn()
    for path, body in (("/score", ROW), ("/v1/models/model:predict",
                                         json.dumps({"instances": [[0.5] * 784, [0.1] * 784]}))):
        st, h, b, _ = serveclient.request(c, "POST", path, body)
        msg = serveclient.loads(b).get("error", "") if b.startswith(b"{") else ""
        T.check(st == 500 and "row 0" in msg and "not finite" in msg,
                f"NaN model {path}: {st} {b[:200]!r}")
    c.close()
finally:
    if srv is not None:
        srv.stop()
T.done()
