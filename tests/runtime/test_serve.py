"""tfdist serve, end to end against its contract, on one server holding
mnist versions 1 and 2 (default 2): answers compared with the float64 oracle
(serve_fixture.py); JSON formats, errors, HTTP framing (keep-alive,
pipelining, 100-continue, HTTP/1.0), concurrency, the access log, SIGTERM.
serve's other flags, model sources and bad CLI input: test_serve_options.py."""
import json
import signal
import socket
import threading
import time

import numpy as np

import tfdtest as T
from serveclient import is_json, loads, post_bytes, request
from serve_fixture import (Server, section, raw_case, logits, probs, rows, close, clear_rows,
                           classes_ok, error_ok, status_ok, reg, X)

def json_rows(x):
    """Rows as JSON text in mixed number syntaxes, all exact for float32 values."""
    fmts = [repr, lambda v: "%.9g" % v, lambda v: "%.12E" % v, lambda v: "%.10e" % v]
    out = []
    for r in x:
        out.append("[" + ",".join("1" if v == 1.0 else fmts[i % 4](float(v))
                                  for i, v in enumerate(r)) + "]")
    return out


# ---- the main server: mnist versions 1 and 2, default 2 ---------------------
BIG = rows(2, -100.0, 100.0)  # outside 0..1 (allowed); logits past float32 exp range
main_srv = None


def check_health(srv):
    c = srv.conn()
    st, h, b, _ = request(c, "GET", "/")
    T.check(st == 200 and b == b"Healthy\n", f"GET /: {st} {b!r}")
    T.check(h.get("content-type", "").startswith("text/plain"), f"GET /: content-type {h.get('content-type')!r}")
    st, h, b, _ = request(c, "GET", "/?probe=1")
    T.check(st == 200 and b == b"Healthy\n", f"GET /?probe=1: {st} {b!r}")
    st, h, b, _ = request(c, "HEAD", "/")
    T.check(st == 200 and b == b"", f"HEAD /: {st} {b!r}")
    c.close()


def check_score(srv):
    c = srv.conn()
    text = '{"data": [' + ",".join(json_rows(X)) + "]}"
    T.check(",1," in text, "test bug: no integer in the rows")
    st, h, b, _ = request(c, "POST", "/score", text)
    T.check(st == 200 and is_json(h), f"/score: {st} {h.get('content-type')} {b[:200]!r}")
    if st == 200:
        classes_ok(loads(b), 2, X, "/score (default v2)")
    # the key spelled with a JSON escape
    st, h, b, _ = request(c, "POST", "/score", '{"\\u0064ata" :\t[' + ",".join(json_rows(X[:2])) + "]}")
    T.check(st == 200, f"/score escaped key: {st} {b[:200]!r}")
    if st == 200:
        classes_ok(loads(b), 2, X[:2], "/score escaped key")
    # pretty-printed JSON, a query string, several batch sizes
    for n in (1, 3, 40):
        x = rows(n)
        st, h, b, _ = request(c, "POST", "/score?x=y", json.dumps({"data": x.tolist()}, indent=2))
        T.check(st == 200, f"/score n={n}: {st} {b[:200]!r}")
        if st == 200:
            classes_ok(loads(b), 2, x, f"/score n={n}")
    c.close()


def check_predict(srv):
    c = srv.conn()
    seen = {}
    xs = X.tolist()
    bodies = {
        "instances": {"instances": xs},
        "named instances": {"instances": [{"dense_input": r} for r in xs]},
        "inputs list": {"inputs": xs},
        "inputs object": {"inputs": {"dense_input": xs}},
        "signature_name": {"signature_name": "serving_default", "instances": xs},
    }
    for path, v in (("/v1/models/mnist:predict", 2), ("/v1/models/mnist/versions/2:predict", 2),
                    ("/v1/models/mnist/versions/1:predict", 1)):
        for label, body in bodies.items():
            st, h, b, _ = request(c, "POST", path, body)
            what = f"{path} {label}"
            T.check(st == 200 and is_json(h), f"{what}: {st} {b[:200]!r}")
            if st != 200:
                continue
            got = loads(b)
            T.check(isinstance(got, dict) and list(got) == ["predictions"], f"{what}: keys {str(got)[:100]}")
            close(got.get("predictions"), v, X, what)
            seen[(path, label)] = np.array(got.get("predictions"), dtype=np.float64)
    a = seen.get(("/v1/models/mnist/versions/1:predict", "instances"))
    b2 = seen.get(("/v1/models/mnist:predict", "instances"))
    T.check(a is not None and b2 is not None and a.shape == b2.shape and np.max(np.abs(a - b2)) > 1e-3,
            "versions 1 and 2 give the same predictions")
    # query string ignored; values outside 0..1 (stable softmax needed)
    for v, path in ((1, "/v1/models/mnist/versions/1:predict?a=b"), (2, "/v1/models/mnist:predict")):
        st, h, b, _ = request(c, "POST", path, {"instances": BIG.tolist()})
        T.check(st == 200, f"{path} large inputs: {st} {b[:200]!r}")
        if st == 200:
            # float32 logits near 150 carry ~1e-5 absolute error: a looser rtol
            close(loads(b).get("predictions"), v, BIG, f"{path} inputs in -100..100", rtol=3e-4)
    # near float32 max: the answer is still JSON, probabilities (a model whose
    # outputs are not finite gets a 500: test_serve_limits.py); 3.4028235e+38
    # is float32's largest as numpy prints it (just above FLT_MAX)
    huge = np.full((1, 784), 3.0e38)
    huge[0, 7] = float(str(np.finfo(np.float32).max))
    st, h, b, _ = request(c, "POST", "/v1/models/mnist:predict", {"instances": huge.tolist()})
    T.check(st == 200, f"predict 3e38 row: {st} {b[:200]!r}")
    if st == 200:
        try:
            p = loads(b)["predictions"]
            T.check(len(p) == 1 and len(p[0]) == 10 and all(
                isinstance(q, (int, float)) and 0 <= q <= 1 for q in p[0]),
                f"predict 3e38 row: {p}")
        except (ValueError, KeyError) as e:
            T.check(False, f"predict 3e38 row: not strict JSON ({e}): {b[:200]!r}")
    c.close()


def check_status_metadata(srv):
    c = srv.conn()
    st, h, b, _ = request(c, "GET", "/v1/models/mnist")
    T.check(st == 200 and is_json(h), f"GET /v1/models/mnist: {st} {b[:200]!r}")
    if st == 200:
        status_ok(loads(b), [2, 1], "GET /v1/models/mnist")
    for v in (1, 2):
        st, h, b, _ = request(c, "GET", f"/v1/models/mnist/versions/{v}")
        T.check(st == 200, f"GET versions/{v}: {st} {b[:200]!r}")
        if st == 200:
            status_ok(loads(b), [v], f"GET /v1/models/mnist/versions/{v}")
    for path, v in (("/v1/models/mnist/metadata", 2), ("/v1/models/mnist/versions/1/metadata", 1)):
        st, h, b, _ = request(c, "GET", path)
        T.check(st == 200 and is_json(h), f"GET {path}: {st} {b[:200]!r}")
        if st != 200:
            continue
        m = loads(b)
        T.check(m.get("model_spec") == {"name": "mnist", "signature_name": "", "version": str(v)},
                f"{path}: model_spec {m.get('model_spec')}")
        try:
            sd = m["metadata"]["signature_def"]["signature_def"]["serving_default"]
            T.check(sd.get("method_name") == "tensorflow/serving/predict", f"{path}: method_name {sd}")
            T.check(isinstance(sd.get("inputs"), dict) and "784" in json.dumps(sd["inputs"]),
                    f"{path}: inputs {sd.get('inputs')}")
            T.check(isinstance(sd.get("outputs"), dict) and "10" in json.dumps(sd["outputs"]),
                    f"{path}: outputs {sd.get('outputs')}")
        except (KeyError, TypeError) as e:
            T.check(False, f"{path}: metadata shape ({e}): {m}")
    c.close()


def check_duplicate_keys(expect, good):
    """A key given twice in one object is a 400 naming it and where, never
    "first (or last) one wins": at the root, in a named row, in the columnar
    inputs, also when an escape spells the same key and for a key the
    server does not read."""
    r0, r1 = json.dumps(good[0]), json.dumps(good[1])
    pred = "/v1/models/mnist:predict"
    cases = (
        ("/score", '{"data": [%s], "data": [%s]}' % (r0, r1), "data twice", '"data"', "body"),
        ("/score", '{"data": [%s], "d\\u0061ta": [%s]}' % (r0, r1), "data twice, escaped", '"data"',
         "body"),
        (pred, '{"instances": [%s], "instances": [%s]}' % (r0, r1), "instances twice",
         '"instances"', "body"),
        (pred, '{"inputs": [%s], "inputs": [%s]}' % (r0, r1), "inputs twice", '"inputs"', "body"),
        (pred, '{"instances": [%s, {"dense_input": %s, "dense_input": %s}]}' % (r0, r0, r1),
         "named row key twice", '"dense_input"', "instances[1]"),
        (pred, '{"inputs": {"dense_input": [%s], "dense_input": [%s]}}' % (r0, r1),
         "inputs name twice", '"dense_input"', "inputs"),
        (pred, '{"signature_name": "a", "instances": [%s], "signature_name": "b"}' % r0,
         "unread key twice", '"signature_name"', "body"),
    )
    for path, body, what, key, where in cases:
        expect("POST", path, body, 400, what, "duplicate key " + key, where + ":")


def check_errors(srv):
    c = srv.conn()
    st, _, _, _ = request(c, "GET", "/")
    sock0 = [c.sock]

    def expect(method, path, body, code, what, *needles, headers=None):
        st, h, b, r = request(c, method, path, body, headers)
        error_ok(st, h, b, code, what, *needles)
        # not a framing error: the keep-alive connection stays usable
        T.check(not r.will_close and c.sock is sock0[0], f"{what}: connection not kept alive")
        return h

    good = X[:4].tolist()
    short = [list(r) for r in good] + [X[4].tolist()]
    short[3] = short[3][:783]
    expect("POST", "/v1/models/mnist:predict", {"instances": short}, 400, "row 3 short",
           "instances[3]", "783")
    long = [list(r) for r in good]
    long[1] = long[1] + [0.5]
    expect("POST", "/v1/models/mnist:predict", {"inputs": long}, 400, "inputs row 1 long",
           "inputs", "785")
    expect("POST", "/score", {"data": [list(r) for r in good[:1]] + [good[1][:100]]}, 400,
           "data row 1 short", "data[1]", "100")
    for label, val in (("string", "x"), ("null", None), ("bool", True), ("list", [0.5]),
                       ("out of float32 range", 1e39), ("negative overflow", -3.5e38)):
        bad = [list(r) for r in good[:2]]
        bad[0][5] = val
        expect("POST", "/score", {"data": bad}, 400, f"data[0][5] {label}", "data[0][5]")
    bad = [list(r) for r in good[:3]]
    bad[2][783] = "0.5"
    expect("POST", "/v1/models/mnist/versions/1:predict", {"instances": bad}, 400,
           "instances[2][783] string", "instances[2][783]")
    expect("POST", "/score", {"data": [good[0], 0.5]}, 400, "data[1] not a row", "data[1]")
    expect("POST", "/score", {"data": []}, 400, "empty data", "data")
    expect("POST", "/v1/models/mnist:predict", {"instances": []}, 400, "empty instances", "instances")
    expect("POST", "/v1/models/mnist:predict", {"inputs": {"images": []}}, 400, "empty inputs", "inputs")
    expect("POST", "/score", b"this is not json", 400, "not JSON")
    expect("POST", "/score", json.dumps({"data": good[:1]}) + " garbage", 400, "trailing garbage")
    row = json.dumps(good[0][1:])[1:-1]
    for tok in ("01", "1.", "+1", ".5", "NaN", "Infinity"):  # not JSON numbers (RFC 8259)
        expect("POST", "/score", '{"data": [[%s, %s]]}' % (tok, row), 400, f"number {tok}")
    expect("POST", "/score", b"", 400, "empty body")
    expect("POST", "/score", "[" * 100000, 400, "deep nesting")
    expect("POST", "/score", {"dat": good[:1]}, 400, "missing data", "data")
    expect("POST", "/score", {"data": {"x": good[:1]}}, 400, "data not a list", "data")
    expect("POST", "/v1/models/mnist:predict", {"rows": good[:1]}, 400, "missing instances/inputs",
           ("instances", "inputs"))
    expect("POST", "/v1/models/mnist:predict",
           {"instances": [{"a": good[0], "b": good[1]}]}, 400, "named row with two keys", "instances[0]")
    expect("POST", "/v1/models/mnist:predict",
           {"inputs": {"a": good[:1], "b": good[:1]}}, 400, "inputs object with two keys", "inputs")
    expect("POST", "/v1/models/mnist:predict", [good[0]], 400, "body not an object")
    # as TF Serving: a wrong input name, an unknown key or signature is a 400
    expect("POST", "/v1/models/mnist:predict", {"instances": [{"images": good[0]}]}, 400,
           "wrong input name in a row", "instances[0]", '"images"', "dense_input")
    expect("POST", "/v1/models/mnist:predict", {"inputs": {"images": good[:1]}}, 400,
           "wrong input name in inputs", "inputs", '"images"', "dense_input")
    expect("POST", "/v1/models/mnist:predict", {"instances": good[:1], "extra": 1}, 400,
           "unknown top-level key", 'unknown key "extra"')
    expect("POST", "/score", {"data": good[:1], "extra": 1}, 400, "/score unknown key",
           'unknown key "extra"')
    expect("POST", "/v1/models/mnist:predict", {"signature_name": "nope", "instances": good[:1]},
           400, "unknown signature_name", '"nope"', "serving_default")
    expect("POST", "/score", b"", 400, "POST without Content-Length (an empty body)")
    check_duplicate_keys(expect, good)
    # 404s
    expect("GET", "/nope", None, 404, "unknown path")
    expect("POST", "/v1/models/mnist:explain", {"instances": good[:1]}, 404, "unknown verb")
    expect("POST", "/v1/models/nosuch:predict", {"instances": good[:1]}, 404, "unknown model")
    expect("GET", "/v1/models/nosuch", None, 404, "unknown model status")
    expect("POST", "/v1/models/mnist/versions/9:predict", {"instances": good[:1]}, 404, "version 9")
    expect("GET", "/v1/models/mnist/versions/9", None, 404, "version 9 status")
    expect("GET", "/v1/models/mnist/versions/9/metadata", None, 404, "version 9 metadata")
    # 405 with Allow
    for method, path, allow in (("GET", "/score", "POST"), ("PUT", "/score", "POST"),
                                ("POST", "/", "GET"), ("GET", "/v1/models/mnist:predict", "POST"),
                                ("DELETE", "/v1/models/mnist", "GET")):
        h = expect(method, path, None if method != "POST" else {"data": good[:1]}, 405, f"{method} {path}")
        T.check(allow in [a.strip() for a in h.get("allow", "").split(",")],
                f"{method} {path}: Allow {h.get('allow')!r}")
    # and the connection still answers correctly
    st, h, b, _ = request(c, "POST", "/score", {"data": good})
    T.check(st == 200, f"score after errors: {st}")
    if st == 200:
        classes_ok(loads(b), 2, X[:4], "score after errors")
    c.close()


def check_framing_errors(srv):
    """Framing errors: the status, then the connection closes. Framing is
    libmicrohttpd's since issue 19: its own errors (431, 400) carry its HTML
    page, not our JSON; a request line that is not HTTP is closed without an
    answer; a POST without Content-Length is an empty body (a JSON 400, see
    check_errors), no longer 411; and chunked bodies are read (no longer 501)."""
    ours = [
        ("501 other encoding", b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
                               b"Content-Length: 5\r\n\r\n", 501),
    ]
    for what, data, code in ours:
        with raw_case(srv, what) as r:
            r.send(data)
            ver, st, h, b = r.response()
            error_ok(st, h, b, code, what)
            T.check(r.closed(), f"{what}: connection not closed after {st}")
    mhd = [
        ("431 huge header", b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        ("431 many headers", b"GET / HTTP/1.1\r\nHost: t\r\n"
                             + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 90) for i in range(250)) + b"\r\n", 431),
        ("400 bad request line", b"GARBAGE\r\n\r\n", None),
        ("400 no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("400 bad Content-Length", b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
    ]
    for what, data, code in mhd:
        with raw_case(srv, what) as r:
            r.send(data)
            if code is not None:
                ver, st, h, b = r.response()
                T.check(st == code, f"{what}: status {st}, expected {code}")
            r.buf = b""  # 0.9.75 sends some of its 400 heads twice
            T.check(r.closed(), f"{what}: connection not closed")
    x = rows(2)
    body = json.dumps({"data": x.tolist()}).encode()
    with raw_case(srv, "chunked body") as r:
        r.send(b"POST /score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
               + b"0\r\n\r\n")
        _, st, _, b = r.response()
        T.check(st == 200, f"chunked body: {st} {b[:200]!r}")
        if st == 200:
            classes_ok(loads(b), 2, x, "chunked body")


def check_http(srv):
    # keep-alive on one http.client connection
    c = srv.conn()
    s0 = None
    for i in range(6):
        x = rows(2)
        st, h, b, r = request(c, "POST", "/v1/models/mnist/versions/1:predict", {"instances": x.tolist()})
        T.check(st == 200, f"keep-alive request {i}: {st}")
        if st == 200:
            close(loads(b)["predictions"], 1, x, f"keep-alive request {i}")
        s0 = s0 or c.sock
        T.check(not r.will_close and c.sock is s0, f"keep-alive request {i}: connection not reused")
    c.close()

    # three pipelined requests in one send (lower-case header names too)
    x1, x2 = rows(3), rows(2)
    b1 = json.dumps({"instances": x1.tolist()}).encode()
    b2 = json.dumps({"data": x2.tolist()}).encode()
    data = (post_bytes("/v1/models/mnist/versions/1:predict", b1)
            + b"POST /score HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(b2) + b2
            + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    with raw_case(srv, "pipelining") as r:
        r.send(data)
        _, st1, _, rb1 = r.response()
        _, st2, _, rb2 = r.response()
        _, st3, _, rb3 = r.response()
        T.check((st1, st2, st3) == (200, 200, 200), f"pipelined statuses {st1} {st2} {st3}")
        if st1 == 200:
            close(loads(rb1).get("predictions"), 1, x1, "pipelined predict v1")
        if st2 == 200:
            classes_ok(loads(rb2), 2, x2, "pipelined score")
        T.check(rb3 == b"Healthy\n", f"pipelined GET /: {rb3!r}")
        T.check(not r.closed(0.5), "pipelined: connection closed")

    # Expect: 100-continue before the body
    x = rows(2)
    body = json.dumps({"instances": x.tolist()}).encode()
    with raw_case(srv, "100-continue") as r:
        r.send(b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        interim = r.until()
        T.check(interim.startswith(b"HTTP/1.1 100 Continue\r\n"), f"100-continue: got {interim[:80]!r}")
        r.send(body)
        _, st, _, b = r.response()
        T.check(st == 200, f"after 100-continue: {st} {b[:200]!r}")
        if st == 200:
            close(loads(b)["predictions"], 2, x, "after 100-continue")

    # A client that half-closes after its two pipelined requests still gets both answers.
    x = rows(2)
    b1 = json.dumps({"data": x.tolist()}).encode()
    with raw_case(srv, "half-close") as r:
        # corked: the data and the FIN leave together, so the server sees both at once
        r.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        r.send(post_bytes("/score", b1) + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r.s.shutdown(socket.SHUT_WR)
        _, st1, _, rb1 = r.response()
        _, st2, _, rb2 = r.response()
        T.check((st1, st2) == (200, 200), f"half-close: statuses {st1} {st2}")
        if st1 == 200:
            classes_ok(loads(rb1), 2, x, "half-close score")
        # libmicrohttpd closes a half-closed connection at its idle timeout (5 s), not at once
        T.check(rb2 == b"Healthy\n" and r.closed(7), f"half-close: GET / {rb2!r}, then closed")

    # HTTP/1.1 needs Host; an absolute-form target is the path it names.
    for what, req, want in (("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
                            ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
                            ("absolute-form", b"GET http://t:1/v1/models/mnist/versions/1 HTTP/1.1\r\n"
                             b"Host: t\r\n\r\n", 200)):
        with raw_case(srv, what) as r:
            r.send(req)
            _, st, _, b = r.response()
            T.check(st == want, f"{what}: {st}, expected {want}: {b[:120]!r}")
            if want == 200 and st == 200:
                status_ok(loads(b), [1], what)

    # HTTP/1.0 closes; HTTP/1.0 with keep-alive stays; HTTP/1.1 Connection: close closes
    for what, req, stays in (("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", False),
                             ("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
                             ("Connection: close", b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", False)):
        with raw_case(srv, what) as r:
            r.send(req)
            _, st, _, b = r.response()
            T.check(st == 200 and b == b"Healthy\n", f"{what}: {st} {b!r}")
            if stays:
                r.send(req)
                _, st, _, b = r.response()
                T.check(st == 200 and b == b"Healthy\n", f"{what} second request: {st} {b!r}")
            else:
                T.check(r.closed(), f"{what}: connection not closed")


def check_concurrency(srv):
    pool = rows(64)
    errors = []

    def client(k):
        lrng = np.random.default_rng(100 + k)
        c = srv.conn()
        try:
            for i in range(20):
                idx = lrng.choice(len(pool), size=int(lrng.integers(1, 5)), replace=False)
                x = pool[idx]
                kind = (k + i) % 3
                if kind == 0:
                    st, _, b, _ = request(c, "POST", "/score", {"data": x.tolist()})
                    want = np.argmax(logits(2, x), axis=1)
                    ok = st == 200 and all(loads(b)[j] == want[j] for j in clear_rows(2, x))
                else:
                    v = kind
                    st, _, b, _ = request(c, "POST", f"/v1/models/mnist/versions/{v}:predict",
                                          {"instances": x.tolist()})
                    ok = st == 200 and np.allclose(np.array(loads(b)["predictions"]), probs(v, x),
                                                   rtol=1e-4, atol=1e-6)
                if not ok:
                    errors.append(f"client {k} request {i}: status {st} {b[:120]!r}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {k}: {type(e).__name__}: {e}")
        finally:
            c.close()

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    T.check(not any(t.is_alive() for t in threads), "concurrency: clients still running after 60 s")
    T.check(not errors, f"concurrency: {len(errors)} wrong answers, e.g. {errors[:3]}")
    T.check(time.time() - t0 < 30, f"concurrency: 160 requests took {time.time() - t0:.1f} s")


def check_sigterm(srv):
    """A request in flight (headers and half its body in) is finished; an
    idle keep-alive connection does not hold the exit up; exit 0."""
    idle = srv.raw()
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    idle.response()
    x = rows(3)
    body = json.dumps({"instances": x.tolist()}).encode()
    r = srv.raw()
    try:
        r.send(post_bytes("/v1/models/mnist/versions/1:predict", body)[:-(len(body) // 2)])
        time.sleep(0.3)
        t0 = time.time()
        srv.p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            r.send(body[-(len(body) // 2):])
            _, st, _, b = r.response()
            T.check(st == 200, f"request in flight at SIGTERM: {st} {b[:200]!r}")
            if st == 200:
                close(loads(b)["predictions"], 1, x, "request in flight at SIGTERM")
        except (OSError, EOFError, ValueError) as e:
            T.check(False, f"request in flight at SIGTERM not finished: {type(e).__name__}: {e}")
        rc, _ = srv.stop(signal.SIGTERM, 8)
        took = time.time() - t0
        T.check(rc == 0 and took < 6, f"SIGTERM: exit {rc} after {took:.1f} s")
    finally:
        r.close()
        idle.close()


def check_log_escape(srv):
    """Control bytes, quotes and non-ASCII in a request line reach the access
    log escaped (\\xNN), never raw: a client cannot forge log lines or send
    terminal escapes."""
    with raw_case(srv, "log escape") as r:
        r.send(b'GET /v1/models/x\x1b[31m\x7f"q\xc3\xa9 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')
        _, st, _, _ = r.response()
        T.check(st == 404, f"log escape: status {st}")
    time.sleep(0.2)
    log = open(srv.err_path, "rb").read()
    line = [l for l in log.splitlines() if b"/v1/models/x" in l]
    T.check(len(line) == 1 and line[0].count(b'"') == 2 and
            b'/v1/models/x\\x1b[31m\\x7f\\x22q\\xc3\\xa9" 404' in line[0],
            f"access log line not escaped: {line!r}")
    T.check(not any(b in log for b in (b"\x1b", b"\x7f", b"\xc3")), "raw bytes in the access log")


def run_main():
    global main_srv
    main_srv = Server(["--model", "mnist", "--registry", reg, "--port", "0", "--threads", "2"], "main")
    T.check(main_srv.host == "127.0.0.1", f"default host: {main_srv.line!r}")
    for name, fn in (("health", check_health), ("score", check_score), ("predict", check_predict),
                     ("status/metadata", check_status_metadata), ("errors", check_errors),
                     ("framing errors", check_framing_errors), ("http", check_http),
                     ("concurrency", check_concurrency), ("log escape", check_log_escape)):
        section(name, lambda fn=fn: fn(main_srv))
        if main_srv.p.poll() is not None:
            T.check(False, f"server died during {name}: {main_srv.stderr()[-500:]!r}")
            return
    section("SIGTERM", lambda: check_sigterm(main_srv))
    rest = main_srv.p.stdout.read().decode("utf-8", "replace")
    T.check(rest == "", f"stdout has more than one line: {rest[:200]!r}")
    log = main_srv.stderr().splitlines()
    T.check(len(log) >= 160, f"access log: only {len(log)} lines on stderr")


try:
    section("main server", run_main)
finally:
    if main_srv is not None and main_srv.p.poll() is None:
        main_srv.p.kill()
        main_srv.p.wait()

T.done()
