"""tfdist serve against clients that try to hold it: one that pipelines
requests and reads the answers slowly, one that keeps sending a request it
never finishes while the server stops, one whose bad request is followed by
more bytes, one that floods pipelined requests; and the memory that idle
connections keep. With --threads 1, another client must still be answered
at once, and SIGTERM must end the server within its grace. Then issue 19's
probes (tests/serveprobes.py): 40 connections holding bodies just under 16
MiB, slow-loris clients under ulimit -n 128, and one 16 MiB request's peak."""
import os
import signal
import socket
import threading
import time


import tfdtest as T
import serveclient
import serveprobes as P

d = T.tmpdir()
MODEL = T.small_model(d, 3)
METADATA = b"GET /v1/models/model/metadata HTTP/1.1\r\nHost: t\r\n\r\n"


def server(tag, threads=1):
    return serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--threads", str(threads),
                                         "--access-log", "off"], d, tag)


def probe(srv, what, limit=1.0):
    """GET / on a new connection must be answered within limit seconds."""
    t0 = time.time()
    try:
        c = socket.create_connection((srv.host, srv.port), timeout=limit + 2)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while b"Healthy" not in got:
            chunk = c.recv(4096)
            if not chunk:
                break
            got += chunk
        c.close()
        took = time.time() - t0
        T.check(b"Healthy" in got and took < limit, f"{what}: GET / answered={b'Healthy' in got} "
                f"after {took:.2f} s (limit {limit} s)")
    except OSError as e:
        T.check(False, f"{what}: GET / not answered within {limit + 2} s ({type(e).__name__})")


def stop_within(srv, what, limit):
    rc, took = srv.stop(signal.SIGTERM, limit)
    T.check(rc == 0, f"{what}: SIGTERM: exit {rc} after {took:.1f} s (limit {limit} s)")


def section(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report and go on
        T.check(False, f"{name}: {type(e).__name__}: {e}")


def slow_pipelined_reader():
    """20000 pipelined requests (~12 MB of answers) read at ~1 KB/s: the
    worker must not wait on this client's reads."""
    srv = server("slowread")
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((srv.host, srv.port))
        s.sendall(METADATA * 20000)
        time.sleep(0.5)
        for i in range(3):
            s.recv(1024)
            probe(srv, f"--threads 1, a pipelining client reading slowly ({i})")
    finally:
        s.close()
        srv.stop()


section("slow pipelined reader", slow_pipelined_reader)


def pipelining_flood():
    """A client pipelining 200000 requests and reading every answer: with
    --threads 1 another client is still answered at once (it waited until
    the flood was over)."""
    srv = server("flood")
    s = socket.create_connection((srv.host, srv.port))
    got = [0]

    def drain():
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return
                got[0] += chunk.count(b"Healthy")
        except OSError:
            return

    def send():
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 200000)
        except OSError:
            return

    sender = threading.Thread(target=send)
    reader = threading.Thread(target=drain)
    try:
        sender.start()
        reader.start()
        time.sleep(0.3)
        probe(srv, "--threads 1, a client pipelining a flood of requests", 0.5)
        T.check(0 < got[0] < 200000, f"flood: {got[0]} answers when the probe was answered")
    finally:
        s.shutdown(socket.SHUT_RDWR)
        srv.stop()
        s.close()
        sender.join()
        reader.join()


section("pipelining flood", pipelining_flood)


def trickle_at_sigterm():
    """A request head that never ends, a byte every 0.3 s: SIGTERM still
    ends the server after its 5 s grace (it waited for ever)."""
    srv = server("trickle")
    s = socket.create_connection((srv.host, srv.port))
    done = threading.Event()

    def trickle():
        while not done.is_set():
            try:
                s.send(b"a")
            except OSError:
                return
            time.sleep(0.3)

    t = threading.Thread(target=trickle)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        t.start()
        time.sleep(0.5)
        stop_within(srv, "a request trickling in", 8)
    finally:
        done.set()
        if t.is_alive():
            t.join()
        s.close()
        srv.stop()


section("trickle at SIGTERM", trickle_at_sigterm)


def bad_request_then_bytes():
    """After a framing error (here 413) the server reads and drops what the
    client still sends, so the client sees the answer and not a reset; that
    must not hold the worker (it did, for up to 2 s)."""
    srv = server("linger")
    s = socket.create_connection((srv.host, srv.port))
    done = threading.Event()

    def more():  # 1 KB every 0.18 s for 1.8 s
        for _ in range(10):
            if done.is_set():
                return
            try:
                s.sendall(b"x" * 1000)
            except OSError:
                return
            time.sleep(0.18)

    t = threading.Thread(target=more)
    try:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999999\r\n\r\n{")
        r = serveclient.Raw.__new__(serveclient.Raw)
        r.s, r.buf = s, b""
        _, st, _, _ = r.response()
        T.check(st == 413, f"huge Content-Length: status {st}")
        t.start()
        time.sleep(0.3)
        probe(srv, "--threads 1, a client still sending after its 413", 0.5)
        t.join()
        T.check(r.closed(3), "413: the connection is not closed after the linger")
    finally:
        done.set()
        if t.is_alive():
            t.join()
        s.close()
        srv.stop()


section("bad request, then more bytes", bad_request_then_bytes)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def idle_connections_memory():
    """100 keep-alive connections, each idle after a 900 KB body: they must
    not keep their request buffers (90 MB here; up to 16 GiB at 16384
    connections)."""
    srv = server("memory")
    socks = []
    try:
        body = b"x" * (900 << 10)
        req = b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        before = rss_mb(srv.p.pid)
        for _ in range(100):
            s = socket.create_connection((srv.host, srv.port), timeout=10)
            socks.append(s)
            s.sendall(req)
            got = b""
            while not got.endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            T.check(b" 404 " in got, f"POST /nope: {got[:100]!r}")
        time.sleep(0.2)
        grew = rss_mb(srv.p.pid) - before
        T.check(grew < 40, f"100 idle connections after 900 KB bodies: RSS grew by {grew:.0f} MB")
    finally:
        for s in socks:
            s.close()
        srv.stop()


def trickled_head():
    """A head sent a byte every 0.3 s renews no deadline for ever: with
    --header-timeout 1.5 the server closes it about 1.5 s after its first
    byte, while a head that arrives in pieces within the limit is answered."""
    srv = serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--threads", "1",
                                        "--access-log", "off", "--header-timeout", "1.5"], d,
                             "trickle-head")
    try:
        c = socket.create_connection((srv.host, srv.port), timeout=5)
        t0, closed_after = time.time(), None
        for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 40:
            try:
                c.sendall(bytes([b]))
                c.settimeout(0.3)
                if c.recv(4096) == b"":
                    closed_after = time.time() - t0
                    break
            except socket.timeout:
                continue
            except OSError:
                closed_after = time.time() - t0
                break
        c.close()
        T.check(closed_after is not None and 1.2 < closed_after < 3.5,
                f"trickled head: closed after {closed_after} s (want ~1.5 s)")
        c = socket.create_connection((srv.host, srv.port), timeout=5)
        for piece in (b"GET / HTT", b"P/1.1\r\nHo", b"st: t\r\n", b"\r\n"):
            c.sendall(piece)
            time.sleep(0.25)
        got = c.recv(4096)
        c.close()
        T.check(b" 200 " in got and b"Healthy" in got, f"a head in 4 pieces over 1 s: {got[:80]!r}")
        probe(srv, "after the trickled head")
    finally:
        srv.stop()


def held_bodies():
    """40 connections each holding a body just under 16 MiB (all but 32
    bytes sent, then a byte every 2 s): RSS stays within the default
    --max-buffered-mb (256 MiB) above idle, those past it get 503 at once, a
    small /score every 0.25 s is still answered, and the memory goes back
    once --body-timeout (8 s here) has cut the held ones."""
    srv = serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--threads", "2",
                                        "--access-log", "off", "--body-timeout", "8"], d, "held")
    try:
        r = P.held_bodies(srv, P.small_score_body())
        print(f"held bodies: {r}")
        T.check(r["peak_mb"] - r["idle_mb"] <= 256 + 32,
                f"held bodies: RSS {r['idle_mb']:.0f} -> {r['peak_mb']:.0f} MB (cap 256 MiB)")
        T.check(r["refused_in_3s"] >= 20, f"held bodies: only {r['refused_in_3s']} of 40 refused at once")
        T.check(r["small_ok"] == r["small_sent"] and r["small_worst_s"] < 1.5,
                f"held bodies: small requests {r['small_ok']}/{r['small_sent']} answered, "
                f"worst {r['small_worst_s']:.2f} s")
        T.check(r["after_mb"] - r["idle_mb"] < 48,
                f"held bodies: RSS {r['after_mb']:.0f} MB after they closed (idle {r['idle_mb']:.0f})")
    finally:
        srv.stop()


def slow_loris():
    """Under ulimit -n 128 (about 92 connections), 120 slow-loris clients
    from 127.0.0.2-5 (30 each, --max-conns-per-ip 30) trickle heads that never
    end: a client from 127.0.0.1 is refused for at most --header-timeout (3 s)
    plus a tick, while the heads are cut."""
    wrap = os.path.join(d, "tfdist-ulimit-128")
    with open(wrap, "w") as f:
        f.write('#!/bin/sh\nulimit -n 128 || exit 99\nexec "%s" "$@"\n' % T.TFDIST)
    os.chmod(wrap, 0o755)
    srv = serveclient.Server(wrap, ["--model", MODEL, "--port", "0", "--threads", "2",
                                    "--access-log", "off", "--header-timeout", "3",
                                    "--max-conns-per-ip", "30"], d, "loris")
    try:
        r = P.slow_loris(srv, run_s=9.0)
        print(f"slow loris: {r}")
        T.check(r["loris"] >= 80, f"slow loris: only {r['loris']} connections held")
        T.check(r["worst_gap_s"] <= 3 + 2.0,
                f"slow loris: GET / unanswered for {r['worst_gap_s']:.1f} s (header timeout 3 s)")
        T.check(r["ok"] >= 20, f"slow loris: GET / answered {r['ok']} of {r['tries']} times")
    finally:
        srv.stop()


def one_big_request():
    """One request of just under 16 MiB of rows of 784 numbers in JSON text
    peaks at no more than 4x the body above idle RSS (VmHWM)."""
    srv = serveclient.Server(T.TFDIST, ["--model", MODEL, "--port", "0", "--threads", "2",
                                        "--access-log", "off"], d, "big")
    try:
        for what, short in (("numbers in full", False), ("single digits", True)):
            body, n = P.rows_body("data", 16 * P.MIB - 64, short=short)
            r = P.one_big(srv, body)
            print(f"one 16 MiB request, {what} ({n} rows): {r}")
            T.check(r["status"] == 200, f"16 MiB request, {what}: status {r['status']}")
            T.check(r["peak_above_mb"] <= 4 * r["body_mb"],
                    f"16 MiB request, {what}: peak {r['peak_above_mb']:.0f} MB above idle, over "
                    f"4x the {r['body_mb']:.1f} MiB body")
    finally:
        srv.stop()


section("idle connections' memory", idle_connections_memory)
section("trickled head", trickled_head)
section("held bodies", held_bodies)
section("slow loris", slow_loris)
section("one 16 MiB request", one_big_request)
T.done()
