"""The TF_CONFIG mesh's hello spoken from Python, for the attack tests: a
stranger that does not hold the job's secret (fake ps, fake worker), a
recorder that does (to replay its bytes later), and a fake chief that holds
it and sends a hostile frame. Frames: header <IIQ (magic, type, bytes), then
the body. The MACs are HMAC-SHA256 as cluster/tcp_auth.c makes them.
Test-only."""
import hashlib
import hmac
import os
import socket
import struct

MAGIC = 0x31444654
HELLO, CHALLENGE, RESPONSE = 0x48, 0x49, 0x4A
PS_INIT, PS_PUSH = 10, 11
LABEL = b"tfdist mesh hello v1\0"


def header(ftype, nbytes):
    return struct.pack("<IIQ", MAGIC, ftype, nbytes)


def hello(fp, frm, to, nonce):
    return header(HELLO, 32) + struct.pack("<QII", fp, frm, to) + nonce


def mac(key, side, fp_c, fp_a, frm, to, nonce_c, nonce_a):
    msg = LABEL + side + struct.pack("<QQII", fp_c, fp_a, frm, to) + nonce_c + nonce_a
    return hmac.new(key, msg, hashlib.sha256).digest()


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += got
    return buf


def read_challenge(s):
    """(fp_a, nonce_a, mac_a) from the acceptor's CHALLENGE frame."""
    raw = recv_exact(s, 16 + 56)
    magic, ftype, nbytes = struct.unpack("<IIQ", raw[:16])
    if (magic, ftype, nbytes) != (MAGIC, CHALLENGE, 56):
        raise ValueError("not a challenge: %r" % raw[:16])
    fp_a, = struct.unpack("<Q", raw[16:24])
    return fp_a, raw[24:40], raw[40:72]


def closed_by_peer(s, wait_s=3.0):
    """True when the peer closed (or reset) the link within wait_s."""
    s.settimeout(wait_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def connect(host, port, wait_s=10.0):
    return socket.create_connection((host, int(port)), timeout=wait_s)


def try_join(host, port, frm, to, key, fp=None):
    """Connects as task frm to task to and answers the challenge with a MAC
    keyed by key (not the job's secret: a stranger). Learns the cluster's
    fingerprint from a first challenge when fp is None. True when the link
    was dropped (the stranger refused)."""
    try:
        if fp is None:
            with connect(host, port) as s:
                s.sendall(hello(0, frm, to, os.urandom(16)))
                fp, _, _ = read_challenge(s)
        s = connect(host, port)
    except (ConnectionError, OSError, ValueError):
        return False  # the port closed: the mesh formed, with an earlier attempt in it
    try:
        nonce_c = os.urandom(16)
        s.sendall(hello(fp, frm, to, nonce_c))
        fp_a, nonce_a, _ = read_challenge(s)
        s.sendall(header(RESPONSE, 32) + mac(key, b"C", fp, fp_a, frm, to, nonce_c, nonce_a))
        return closed_by_peer(s)
    except (ConnectionError, OSError):
        return True
    finally:
        s.close()


def record_join(host, port, frm, to, key):
    """A legitimate join that holds the secret: the bytes it sent, (hello,
    response), for a later replay; the socket is closed."""
    with connect(host, port) as s:
        s.sendall(hello(0, frm, to, os.urandom(16)))
        fp, _, _ = read_challenge(s)
    s = connect(host, port)
    try:
        nonce_c = os.urandom(16)
        h = hello(fp, frm, to, nonce_c)
        s.sendall(h)
        fp_a, nonce_a, mac_a = read_challenge(s)
        if not hmac.compare_digest(mac_a, mac(key, b"A", fp, fp_a, frm, to, nonce_c, nonce_a)):
            raise ValueError("the acceptor's MAC is wrong")
        r = header(RESPONSE, 32) + mac(key, b"C", fp, fp_a, frm, to, nonce_c, nonce_a)
        s.sendall(r)
        return h, r
    finally:
        s.close()


def replay(host, port, recorded):
    """Sends a recorded hello, reads the fresh challenge, sends the recorded
    response: "dropped" when a challenge came and then the link closed; else
    what happened. A link reset before any challenge is no verdict: nothing
    judged the replay (a killed task's port still open, say)."""
    h, r = recorded
    with connect(host, port) as s:
        try:
            s.sendall(h)
            read_challenge(s)
        except (ConnectionError, OSError) as e:
            return "not challenged (%s)" % e
        try:
            s.sendall(r)
            return "dropped" if closed_by_peer(s) else "accepted (the link stayed open)"
        except (ConnectionError, OSError):
            return "dropped"


def accept_as(listener, key, wait_s=20.0):
    """Accepts one connector on listener and passes the hello as the
    acceptor, holding key: the socket, ready for frames."""
    listener.settimeout(wait_s)
    s, _ = listener.accept()
    s.settimeout(wait_s)
    raw = recv_exact(s, 16 + 32)
    fp_c, frm, to = struct.unpack("<QII", raw[16:32])
    nonce_c = raw[32:48]
    nonce_a = os.urandom(16)
    s.sendall(header(CHALLENGE, 56) + struct.pack("<Q", fp_c) + nonce_a +
              mac(key, b"A", fp_c, fp_c, frm, to, nonce_c, nonce_a))
    recv_exact(s, 16 + 32)
    return s
