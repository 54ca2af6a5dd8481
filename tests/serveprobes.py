"""Issue 19's probes of `tfdist serve`, each against a server already
started (serveclient.Server): they return what they measured, and the
callers judge (tests/runtime/test_serve_limits.py asserts;
benchmarks/serve/serve_probes.py prints them for two binaries side by side).
Loopback only: other client addresses are 127.0.0.2 and up."""
import json
import socket
import threading
import time

MIB = 1 << 20


def rss_mb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid):
    """Resets VmHWM to the present RSS (Linux: clear_refs 5); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rows_body(key, target_bytes, seed=1, short=False):
    """{"key": [[784 numbers], ...]} as JSON text of just under target_bytes:
    float32 values printed in full ("%.9g"), or (short) single digits 0 and
    1, the most numbers a byte of text can hold."""
    import numpy as np
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0, 1, 784).astype(np.float32)
    row = "[" + ",".join(("%d" % round(v)) if short else ("%.9g" % v) for v in vals) + "]"
    n = max(1, (target_bytes - 16) // (len(row) + 1))
    return ('{"%s": [' % key + ",".join([row] * n) + "]}").encode(), n


def get_root(host, port, timeout=2.0, src=None):
    """GET / on a new connection: seconds taken, or None when not answered."""
    t0 = time.time()
    try:
        s = socket.create_connection((host, port), timeout=timeout,
                                     source_address=(src, 0) if src else None)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        got = b""
        while b"Healthy" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        return time.time() - t0 if b" 200 " in got and b"Healthy" in got else None
    except OSError:
        return None


def score_small(host, port, body, timeout=3.0, headers=b""):
    """One small POST /score on a new connection: (status or None, seconds)."""
    t0 = time.time()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        s.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers
                  + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        return int(got.split(b" ", 2)[1]), time.time() - t0
    except (OSError, ValueError, IndexError):
        return None, time.time() - t0


class Sampler:
    """The server's RSS every 0.1 s in a thread: .peak (MB) once stopped."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.t.join()
        return self.peak


def held_bodies(srv, small_body, conns=40, body_bytes=16 * MIB - 64, hold_s=12.0, trickle_s=2.0):
    """conns connections each send the head and all but 32 bytes of a body
    of body_bytes, then one byte every trickle_s; meanwhile a small /score
    every 0.25 s on new connections. Returns idle, peak and after RSS (MB),
    how many attackers failed within 3 s (refused) and later (cut by a
    timeout), and the small requests' statuses and worst latency."""
    pid = srv.p.pid
    idle = rss_mb(pid)
    sampler = Sampler(pid)
    chunk = b"0" * (1 << 20)
    failed, socks, lock = [], [], threading.Lock()
    stop = threading.Event()
    t_start = time.time()

    def attacker():
        try:
            s = socket.create_connection((srv.host, srv.port), timeout=30)
        except OSError:
            with lock:
                failed.append(time.time() - t_start)
            return
        with lock:
            socks.append(s)
        try:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % body_bytes)
            left = body_bytes - 32
            while left > 0 and not stop.is_set():
                n = s.send(chunk[:min(left, len(chunk))])
                left -= n
            while not stop.is_set():
                s.send(b"0")
                stop.wait(trickle_s)
        except OSError:
            with lock:
                failed.append(time.time() - t_start)

    threads = [threading.Thread(target=attacker) for _ in range(conns)]
    for t in threads:
        t.start()
    statuses, worst = [], 0.0
    t_end = time.time() + hold_s
    while time.time() < t_end:
        st, took = score_small(srv.host, srv.port, small_body)
        statuses.append(st)
        worst = max(worst, took)
        time.sleep(0.25)
    held_peak = sampler.stop()
    stop.set()
    for s in list(socks):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
    for t in threads:
        t.join(10)
    time.sleep(1.0)
    return {"idle_mb": idle, "peak_mb": held_peak, "after_mb": rss_mb(pid),
            "refused_in_3s": sum(t < 3 for t in failed), "cut": sum(t >= 3 for t in failed),
            "conns": conns, "small_ok": statuses.count(200),
            "small_sent": len(statuses), "small_worst_s": worst}


def slow_loris(srv, ips=("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"), per_ip=30,
               run_s=10.0, trickle_s=1.0):
    """per_ip connections from each of ips send a head that never ends, a
    byte every trickle_s; a client from 127.0.0.1 asks GET / every 0.1 s.
    Returns its longest stretch without an answer (s) and its counts."""
    socks, stop = [], threading.Event()

    def loris(ip):
        try:
            s = socket.create_connection((srv.host, srv.port), timeout=5, source_address=(ip, 0))
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        except OSError:
            return
        socks.append(s)
        while not stop.is_set():
            try:
                s.send(b"a")
            except OSError:
                return
            stop.wait(trickle_s)

    threads = [threading.Thread(target=loris, args=(ip,)) for ip in ips for _ in range(per_ip)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.time()
    last_ok, worst_gap, ok, tries = t0, 0.0, 0, 0
    while time.time() < t0 + run_s:
        took = get_root(srv.host, srv.port, timeout=1.0)
        tries += 1
        now = time.time()
        if took is not None:
            ok += 1
            worst_gap = max(worst_gap, now - last_ok)
            last_ok = now
        time.sleep(0.1)
    worst_gap = max(worst_gap, time.time() - last_ok)
    stop.set()
    for s in socks:
        s.close()
    for t in threads:
        t.join(5)
    return {"loris": len(socks), "worst_gap_s": worst_gap, "ok": ok, "tries": tries}


def one_big(srv, body, path="/score"):
    """One request of body: its status, idle RSS and peak RSS above it (MB, VmHWM)."""
    pid = srv.p.pid
    time.sleep(0.3)
    idle = rss_mb(pid)
    exact = reset_peak(pid)
    sampler = Sampler(pid)
    s = socket.create_connection((srv.host, srv.port), timeout=120)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), len(body)) + body)
    got = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    s.close()
    peak = sampler.stop()
    if exact:
        peak = max(peak, rss_mb(pid, "VmHWM"))
    try:
        status = int(got.split(b" ", 2)[1])
    except (ValueError, IndexError):
        status = None
    return {"status": status, "idle_mb": idle, "peak_above_mb": peak - idle,
            "body_mb": len(body) / MIB, "exact_peak": exact}


def small_score_body():
    return json.dumps({"data": [[0.5] * 784]}).encode()
