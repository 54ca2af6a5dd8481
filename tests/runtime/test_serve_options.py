"""tfdist serve's flags and model sources, each on a server of its own:
--model name:version with --max-body-mb, --access-log off and the idle
timeout; a version registered while serving (--poll-s), and one whose file
is corrupt; a model path as REF with --name; --threads 1 against idle and
stalled clients (TFDIST_REGISTRY); bad CLI input. The main server's
contract: test_serve.py. The models and the oracle: serve_fixture.py."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import tfdtest as T
from serveclient import loads, request
from serve_fixture import (Server, section, raw_case, rows, close, classes_ok, error_ok,
                           status_ok, d, reg, outs, X)

# ---- a second server: mnist:1 only, --max-body-mb 1, access log off ---------
def check_small(srv):
    c = srv.conn()
    st, h, b, _ = request(c, "GET", "/v1/models/mnist")
    T.check(st == 200 and loads(b) == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]}, f"mnist:1 status: {st} {b[:200]!r}")
    st, h, b, _ = request(c, "GET", "/v1/models/mnist/versions/2")
    T.check(st == 404, f"mnist:1 serves version 2: {st}")
    # a batch just under 1 MB (either reading of MB) is accepted
    x = rows(120)
    texts = ["[" + ",".join("%.9g" % v for v in r) + "]" for r in x]
    n, size = 0, 12
    while n < len(x) and size + len(texts[n]) + 1 < 990000:
        size += len(texts[n]) + 1
        n += 1
    body = '{"data": [' + ",".join(texts[:n]) + "]}"
    T.check(len(body) > 800000, f"big batch only {len(body)} bytes")
    size0 = os.path.getsize(srv.err_path)
    st, h, b, _ = request(c, "POST", "/score", body)
    T.check(st == 200, f"{len(body)}-byte body with --max-body-mb 1: {st} {b[:200]!r}")
    if st == 200:
        classes_ok(loads(b), 1, x[:n], f"score {n} rows (mnist:1 default)")
    st, h, b, _ = request(c, "POST", "/v1/models/mnist:predict", {"instances": X[:3].tolist()})
    T.check(st == 200, f"mnist:1 predict: {st}")
    if st == 200:
        close(loads(b)["predictions"], 1, X[:3], "mnist:1 default predict")
    c.close()
    T.check(os.path.getsize(srv.err_path) == size0, "--access-log off still logs requests")
    # 413: Content-Length over 1 MiB, decided from the header
    with raw_case(srv, "413") as r:
        r.send(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (2 * 1048576 + 1))
        _, st, h, b = r.response()
        error_ok(st, h, b, 413, "413 body over --max-body-mb")
        T.check(r.closed(), "413: connection not closed")
    # an idle keep-alive connection is closed after 5 s
    r = srv.raw()
    try:
        r.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r.response()
        t0 = time.time()
        shut = r.closed(9)
        took = time.time() - t0
        T.check(shut and 3.5 < took < 8.5, f"idle keep-alive: closed={shut} after {took:.1f} s (want ~5)")
    finally:
        r.close()


srv = None
try:
    srv = Server(["--model", "mnist:1", "--registry", reg, "--port", "0", "--max-body-mb", "1",
                  "--access-log", "off", "--threads", "1"], "small")
    section("mnist:1 server", lambda: check_small(srv))
    rc, took = srv.stop(signal.SIGINT, 5)
    T.check(rc == 0, f"SIGINT: exit {rc} after {took:.1f} s")
except Exception as e:  # noqa: BLE001
    T.check(False, f"mnist:1 server: {type(e).__name__}: {e}")
finally:
    if srv is not None and srv.p.poll() is None:
        srv.p.kill()
        srv.p.wait()


# ---- a version registered while serving: loaded, and the new default --------
def wait_versions(c, n):
    """hot's status once it lists n versions (or the last one seen, after 10 s)."""
    got, deadline = None, time.monotonic() + 10
    while time.monotonic() < deadline:
        st, h, b, _ = request(c, "GET", "/v1/models/hot")
        got = loads(b) if st == 200 else None
        if got and len(got["model_version_status"]) == n:
            break
        time.sleep(0.1)
    return got


def check_new_version(srv, reg2):
    c = srv.conn()
    st, h, b, _ = request(c, "GET", "/v1/models/hot")
    T.check(st == 200, f"hot: status {st}")
    if st == 200:
        status_ok(loads(b), [1], "hot before")
    p = T.run(["model", "register", "--registry", reg2, "--name", "hot", "--path",
               os.path.join(outs[2], "model")])
    T.check(p.returncode == 0 and p.stdout.strip() == "hot:2", f"register hot:2: {p.stdout!r}")
    status_ok(wait_versions(c, 2), [2, 1], "hot after registering version 2")
    x = rows(6)
    st, h, b, _ = request(c, "POST", "/v1/models/hot:predict", {"instances": x.tolist()})
    T.check(st == 200, f"hot: default predict {st} {b[:200]!r}")
    if st == 200:
        close(loads(b)["predictions"], 2, x, "hot: the new version is the default")
    st, h, b, _ = request(c, "POST", "/v1/models/hot/versions/1:predict", {"instances": x.tolist()})
    T.check(st == 200, f"hot: version 1 predict {st}")
    if st == 200:
        close(loads(b)["predictions"], 1, x, "hot: version 1 still served")
    st, h, b, _ = request(c, "POST", "/score", {"data": x.tolist()})
    T.check(st == 200, f"hot: score {st}")
    if st == 200:
        classes_ok(loads(b), 2, x, "hot: /score uses the new default")
    T.check("now serving hot version(s) 2 (default 2)" in srv.stderr(),
            f"hot: no log line for the new version: {srv.stderr()[-300:]!r}")
    # A version whose file does not match its recorded sha256 (made whole in
    # a side folder, then renamed in): reported once, not served; the next
    # good one is.
    side = os.path.join(reg2, "hot", ".making")
    shutil.copytree(os.path.join(reg2, "hot", "2"), side)
    meta_path = os.path.join(side, "metadata.json")
    meta = json.load(open(meta_path))
    meta["id"], meta["version"] = "hot:3", 3
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with open(os.path.join(side, "model.h5"), "r+b") as f:
        f.seek(-16, os.SEEK_END)
        f.write(b"\xff" * 16)
    os.rename(side, os.path.join(reg2, "hot", "3"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "was not loaded" not in srv.stderr():
        time.sleep(0.1)
    err = srv.stderr()
    T.check(err.count("was not loaded") == 1 and "sha256" in err,
            f"hot: a corrupt version 3 is not reported once: {err[-400:]!r}")
    p = T.run(["model", "register", "--registry", reg2, "--name", "hot", "--path",
               os.path.join(outs[1], "model")])
    T.check(p.returncode == 0 and p.stdout.strip() == "hot:4", f"register hot:4: {p.stdout!r}")
    status_ok(wait_versions(c, 3), [4, 2, 1], "hot after a corrupt version 3 and a good version 4")
    st, h, b, _ = request(c, "POST", "/v1/models/hot:predict", {"instances": x.tolist()})
    T.check(st == 200, f"hot: predict after version 4 {st}")
    if st == 200:
        close(loads(b)["predictions"], 1, x, "hot: version 4 (v1's weights) is the default")
    c.close()
    T.check(srv.stderr().count("was not loaded") == 1, "hot: the corrupt version was retried")


srv = None
try:
    reg2 = os.path.join(d, "registry2")
    p = T.run(["model", "register", "--registry", reg2, "--name", "hot", "--path",
               os.path.join(outs[1], "model")])
    T.check(p.returncode == 0, f"register hot:1: {p.stderr!r}")
    srv = Server(["--model", "hot", "--registry", reg2, "--port", "0", "--poll-s", "0.2",
                  "--access-log", "off"], "hot")
    section("new version while serving", lambda: check_new_version(srv, reg2))
    rc, took = srv.stop(signal.SIGTERM, 5)
    T.check(rc == 0, f"hot server: SIGTERM exit {rc} after {took:.1f} s")
finally:
    if srv is not None and srv.p.poll() is None:
        srv.p.kill()
        srv.p.wait()


# ---- a model path as REF: served as --name (default "model") version 1 -----
for ref, name, v in ((os.path.join(outs[2], "model"), "foo", 2),
                     (os.path.join(outs[1], "model", "model.h5"), None, 1)):
    srv = None
    try:
        srv = Server(["--model", ref, "--port", "0", "--access-log", "off"]
                     + (["--name", name] if name else []), f"path{v}")
        name = name or "model"
        c = srv.conn()
        st, h, b, _ = request(c, "GET", f"/v1/models/{name}")
        T.check(st == 200, f"path REF {ref}: GET /v1/models/{name}: {st}")
        if st == 200:
            status_ok(loads(b), [1], f"path REF {ref}")
        x = rows(5)
        st, h, b, _ = request(c, "POST", f"/v1/models/{name}/versions/1:predict", {"instances": x.tolist()})
        T.check(st == 200, f"path REF {ref}: predict {st} {b[:200]!r}")
        if st == 200:
            close(loads(b)["predictions"], v, x, f"path REF {ref} predict")
        st, h, b, _ = request(c, "POST", "/score", {"data": x.tolist()})
        T.check(st == 200, f"path REF {ref}: score {st}")
        if st == 200:
            classes_ok(loads(b), v, x, f"path REF {ref} score")
        st, h, b, _ = request(c, "GET", "/v1/models/mnist")
        T.check(st == 404, f"path REF {ref}: /v1/models/mnist answers {st}")
        c.close()
    except Exception as e:  # noqa: BLE001
        T.check(False, f"path REF {ref}: {type(e).__name__}: {e}")
    finally:
        if srv is not None:
            srv.stop(signal.SIGTERM, 5)


# ---- idle or stalled clients do not hold up others ----------------------------
def check_no_head_of_line(srv):
    """--threads counts requests served at once: an idle keep-alive connection
    or one still sending its headers is no request, so a new client with a
    complete request is answered at once (not after the 5 s or 30 s timeouts)."""
    held = []
    try:
        for what, data in (("an idle keep-alive connection", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
                           ("a connection still sending headers", b"GET / HTTP/1.1\r\nHo")):
            r = srv.raw()
            held.append(r)
            r.send(data)
            if data.endswith(b"\r\n\r\n"):
                r.response()
            time.sleep(0.2)
            c = http.client.HTTPConnection(srv.host, srv.port, timeout=3)
            t0 = time.time()
            try:
                st, _, b, _ = request(c, "GET", "/")
                T.check(st == 200 and time.time() - t0 < 2,
                        f"--threads 1 with {what} open: {st} after {time.time() - t0:.1f} s")
            except OSError as e:
                T.check(False, f"--threads 1 with {what} open: no answer in 3 s ({type(e).__name__})")
            finally:
                c.close()
    finally:
        for r in held:
            r.close()


srv = None
try:
    srv = Server(["--model", "mnist:2", "--port", "0", "--threads", "1", "--access-log", "off"], "hol",
                 env={"TFDIST_REGISTRY": reg})
    section("head-of-line", lambda: check_no_head_of_line(srv))
finally:
    if srv is not None:
        srv.stop(signal.SIGKILL, 5)


# ---- bad CLI input -----------------------------------------------------------
def cli_error(label, args, code, *needles):
    try:
        p = T.run(["serve"] + args, timeout=15)
    except subprocess.TimeoutExpired:
        T.check(False, f"{label}: still running after 15 s (it should have refused)")
        return
    err = p.stderr.strip()
    T.check(p.returncode == code, f"{label}: exit {p.returncode}, expected {code}; stderr {err!r}")
    T.check(err.count("\n") == 0 and err.startswith("tfdist: error:"), f"{label}: not one line: {err!r}")
    for n in needles:
        alts = n if isinstance(n, tuple) else (n,)
        T.check(any(a in err for a in alts), f"{label}: {n!r} not in {err!r}")


base = ["--registry", reg, "--port", "0"]
cli_error("missing model file", ["--model", "/nonexistent.h5"] + base, 2, "/nonexistent.h5")
cli_error("unknown registry name", ["--model", "nosuchname"] + base, 2, "nosuchname")
cli_error("unknown registry version", ["--model", "mnist:9"] + base, 2, "mnist")
notmodel = os.path.join(d, "notmodel.h5")
with open(notmodel, "wb") as f:
    f.write(b"definitely not hdf5 " * 50)
bad_reg = os.path.join(d, "bad-registry")
shutil.copytree(reg, bad_reg)
with open(os.path.join(bad_reg, "mnist", "1", "model.h5"), "r+b") as f:
    f.seek(3000)
    byte = f.read(1)
    f.seek(3000)
    f.write(bytes([byte[0] ^ 0x55]))
cli_error("modified registry file", ["--model", "mnist", "--registry", bad_reg, "--port", "0"], 2,
          os.path.join(bad_reg, "mnist", "1", "model.h5"))
# metadata.json of mnist:1 claiming version 2: it was served as a second version 2
bad_reg2 = os.path.join(d, "bad-registry-2")
shutil.copytree(reg, bad_reg2)
meta_path = os.path.join(bad_reg2, "mnist", "1", "metadata.json")
with open(meta_path) as f:
    meta = json.load(f)
with open(meta_path, "w") as f:
    json.dump(dict(meta, version=2), f)
cli_error("metadata version", ["--model", "mnist", "--registry", bad_reg2, "--port", "0"], 2,
          meta_path)
cli_error("not an HDF5 file", ["--model", notmodel] + base, 2, notmodel)
cli_error("port out of range", ["--model", "mnist", "--registry", reg, "--port", "70000"], 2, "--port")
cli_error("threads 0", ["--model", "mnist", "--threads", "0"] + base, 2, "--threads")
cli_error("threads 257", ["--model", "mnist", "--threads", "257"] + base, 2, "--threads")
cli_error("max-body-mb 0", ["--model", "mnist", "--max-body-mb", "0"] + base, 2, "--max-body-mb")
cli_error("access-log=maybe", ["--model", "mnist", "--access-log=maybe"] + base, 2, "--access-log", "maybe")
# tfdist's on|off flags take an optional value, so 'maybe' may be read as a stray argument
cli_error("access-log maybe", ["--model", "mnist", "--access-log", "maybe"] + base, 2,
          ("maybe", "--access-log"))
cli_error("unknown flag", ["--model", "mnist", "--bogus", "1"] + base, 2, "--bogus")
busy = socket.socket()
try:
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cli_error("port in use", ["--model", "mnist", "--registry", reg, "--port", str(port)], 1, "--port")
finally:
    busy.close()

T.done()
