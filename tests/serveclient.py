"""A small HTTP/1.1 client side for the tfdist serve tests: start the
server and find its address, strict JSON, http.client requests, and a raw
socket reader for framing tests (pipelining, 100-continue, closes). Test-only."""
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import time

ADDR = re.compile(r"https?://([0-9.]+):([0-9]+)")
TIMEOUT = 10


def no_constants(name):
    raise ValueError(f"non-JSON constant {name}")


def loads(body):
    """Strict JSON: NaN/Infinity are not JSON (the contract prints null)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    return json.loads(body, parse_constant=no_constants)


class Server:
    """tfdist serve ARGS, its stderr in folder/serve-TAG.stderr; raises when
    no address line comes within 20 s."""

    def __init__(self, tfdist, args, folder, tag, env=None):
        self.err_path = os.path.join(folder, f"serve-{tag}.stderr")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen([tfdist, "serve"] + args, stdout=subprocess.PIPE,
                                  stderr=self.err, env=dict(os.environ, **(env or {})))
        self.line = self._first_line(20)
        m = ADDR.search(self.line)
        if not m:
            self.stop()
            raise RuntimeError(f"serve {args}: no address in {self.line!r}; stderr: {self.stderr()!r}")
        self.host, self.port = m.group(1), int(m.group(2))

    def _first_line(self, limit):
        buf, fd, end = b"", self.p.stdout.fileno(), time.time() + limit
        while b"\n" not in buf and time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode("utf-8", "replace")

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)

    def raw(self):
        return Raw(self.host, self.port)

    def stop(self, sig=signal.SIGKILL, wait=5):
        """Sends sig; returns (exit code or None if it had to be killed, elapsed s)."""
        t0 = time.time()
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(wait)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        self.err.close()
        return rc, time.time() - t0


def request(conn, method, path, body=None, headers=None):
    """One request on an http.client connection -> (status, headers, body bytes)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data, r


def is_json(hdrs):
    return hdrs.get("content-type", "").split(";")[0].strip() == "application/json"


class Raw:
    """A raw socket client that reads HTTP/1.x responses by Content-Length."""

    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def until(self, sep=b"\r\n\r\n"):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head=False):
        lines = self.until().decode("latin-1").split("\r\n")
        ver, code = lines[0].split(" ", 2)[:2]
        hdrs = {}
        for ln in lines[1:]:
            if ln:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        code = int(code)
        if head or code in (100, 204, 304):
            body = b""
        elif "content-length" in hdrs:
            body = self.take(int(hdrs["content-length"]))
        else:  # read to EOF
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return ver, code, hdrs, body

    def closed(self, wait=3.0):
        """True when the peer has closed (EOF or reset) within wait seconds."""
        if self.buf:
            return False
        self.s.settimeout(wait)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(TIMEOUT)

    def close(self):
        self.s.close()


def post_bytes(path, body, extra=""):
    if isinstance(body, str):
        body = body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body

