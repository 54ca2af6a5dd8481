"""The TF_CONFIG mesh's authentication (issue 18, part 1), each attack
replayed against a chief + worker + ps cluster of plain processes on
127.0.0.1 (tfauth.py speaks the hello from Python):

- the oracle: the cluster without a secret; with TFDIST_SECRET it ends with
  the same weights, bit for bit (h5py);
- a fake ps that connects to chief and worker before the real ps starts,
  posing as ps 0 with the right fingerprint but not the secret: every
  attempt is dropped, the real ps joins, weights equal the oracle's;
- a fake worker 0 likewise, attempts running while the real tasks start;
- a 32-byte packet (the old hello, wrong fingerprint), 32 garbage bytes and
  a hello with a wrong fingerprint and MAC on the chief's port: dropped,
  the cluster forms, weights equal;
- a recorded hello (a real, secret-holding join of a chief that was then
  ended) replayed to a fresh chief: dropped, the real worker joins;
- a rank 0 that holds the secret sends a ps an INIT of 2^62 elements: the
  ps ends with "bad init ... more than 2^40 elements", not a signal;
- no secret and a non-loopback address in the cluster: refused at once
  (exit 2, naming TFDIST_SECRET and --secret-file), before it listens;
  --insecure-cluster lets it start; a bad --secret-file (mode 644, a
  folder, 8 bytes), or one given to a run without TF_CONFIG, is a one-line
  error, exit 2;
- with the secret, a cluster on this host's own non-loopback address trains
  to the oracle's weights, and its chief listens on that address only, not
  on 127.0.0.1 (skipped when the host has none);
- a host name that maps to loopback here (Debian's /etc/hosts) is refused
  without a secret, and with one listens on every interface: the other
  hosts reach it by that name (skipped where the name maps elsewhere)."""
import os
import socket
import stat
import sys
import tempfile
import threading
import time

import numpy as np

import tfauth as TA
import tfcluster as TC

LIMIT_S = 40
SECRET = "0123456789abcdef0123456789abcdef"
ENV = {"TFDIST_SECRET": SECRET}
KEY = SECRET.encode()
WRONG = b"not-the-secret-of-this-job-00000"


def model(folder):
    return os.path.join(folder, "outputs", "model", "model.h5")


def args(folder, data, extra=()):
    return TC.train_args(folder, data, ["--epochs", "1", "--timeout", "20"] + list(extra))


def finish(C, name, c, oracle):
    """Every task exit 0 and the model equal to the oracle's, bit for bit."""
    c.wait(LIMIT_S + 5)
    c.kill()
    rcs = [t.rc for t in c.tasks]
    if not C.check(all(rc == 0 for rc in rcs), "%s: exits %s" % (name, rcs), c.summary()):
        return None
    w, why = TC.try_weights(model(c.folder))
    if not C.check(w is not None, "%s: %s" % (name, why)):
        return None
    if oracle is not None:
        same = w.keys() == oracle.keys() and all(np.array_equal(w[k], oracle[k]) for k in w)
        if C.check(same, "%s: weights differ from the oracle's (max |dw| %g)" %
                   (name, TC.max_abs_diff(w, oracle))):
            C.ok("%s: every task exit 0, weights bit-identical to the oracle's" % name)
    return w


def hp(spec, kind, i=0):
    host, port = spec[kind][i].rsplit(":", 1)
    return host, int(port)


def wait_listening(host, port, wait_s=15):
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def oracle_case(C, tmp, data):
    spec = TC.cluster_spec(1, 1, 1)
    f = os.path.join(tmp, "oracle")
    c = TC.Cluster(f, spec).start(args(f, data), limit_s=LIMIT_S)
    w0 = finish(C, "no secret (oracle)", c, None)
    f = os.path.join(tmp, "secret")
    c = TC.Cluster(f, spec).start(args(f, data), limit_s=LIMIT_S, env_extra=ENV)
    finish(C, "TFDIST_SECRET on loopback", c, w0)
    return w0


def fake_case(C, tmp, data, oracle, kind):
    """A stranger posing as ps 0 (task 2) or worker 0 (task 1)."""
    spec = TC.cluster_spec(1, 1, 1)
    name = "fake %s 0" % kind
    f = os.path.join(tmp, "fake-" + kind)
    c = TC.Cluster(f, spec)
    frm = 2 if kind == "ps" else 1
    try:
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("chief", 0)])
        if kind == "ps":
            c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("worker", 0)])
        targets = [("chief", 0)] + ([("worker", 0)] if kind == "ps" else [])
        refused = []
        for k, i in targets:
            host, port = hp(spec, k, i)
            if not wait_listening(host, port):
                C.check(False, "%s: %s %d never listened" % (name, k, i), c.summary())
                return
            for key in (WRONG, b""):  # a guessed key, no key
                refused.append(TA.try_join(host, port, frm, 0 if k == "chief" else 1, key))
        C.check(all(refused), "%s: an attempt was not dropped: %s" % (name, refused), c.summary())
        # More attempts while the real task starts: a stranger never ends a start-up.
        stop = threading.Event()

        def hammer():
            host, port = hp(spec, "chief")
            while not stop.is_set():
                try:
                    TA.try_join(host, port, frm, 0, WRONG)
                except OSError:
                    time.sleep(0.05)

        th = threading.Thread(target=hammer, daemon=True)
        th.start()
        rest = [(kind, 0)] + ([("ps", 0)] if kind == "worker" else [])
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=rest)
        c.wait(LIMIT_S + 5)
        stop.set()
        th.join(10)
        finish(C, name, c, oracle)
        chief_err = c.task("chief", 0).stderr()
        C.check("failed authentication" in chief_err, "%s: the chief logged no drop" % name,
                chief_err[-1500:])
    finally:
        c.kill()


def garbage_case(C, tmp, data, oracle):
    spec = TC.cluster_spec(1, 1, 1)
    f = os.path.join(tmp, "garbage")
    c = TC.Cluster(f, spec)
    try:
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("chief", 0)])
        host, port = hp(spec, "chief")
        C.check(wait_listening(host, port), "garbage: the chief never listened")
        import struct
        old = TA.header(TA.HELLO, 16) + struct.pack("<QII", 0x1234, 1, 0)  # 32 bytes
        for pkt in (old, os.urandom(32)):
            with TA.connect(host, port) as s:
                s.sendall(pkt)
                C.check(TA.closed_by_peer(s), "garbage: a 32-byte packet was not dropped")
        # Today's hello with a wrong fingerprint, not holding the secret.
        C.check(TA.try_join(host, port, 1, 0, WRONG, fp=0x1234),
                "garbage: a hello with a wrong fingerprint was not dropped")
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("worker", 0), ("ps", 0)])
        finish(C, "32-byte wrong-fingerprint and garbage packets", c, oracle)
    finally:
        c.kill()


def replay_case(C, tmp, data, oracle):
    spec = TC.cluster_spec(1, 1, 1)
    host, port = hp(spec, "chief")
    f = os.path.join(tmp, "record")
    c = TC.Cluster(f, spec)
    try:
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("chief", 0)])
        C.check(wait_listening(host, port), "replay: the first chief never listened")
        recorded = TA.record_join(host, port, 1, 0, KEY)
    finally:
        c.kill()
    f = os.path.join(tmp, "replay")
    c = TC.Cluster(f, spec)
    try:
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("chief", 0)])
        C.check(wait_listening(host, port), "replay: the second chief never listened")
        got = TA.replay(host, port, recorded)
        C.check(got == "dropped", "replay: the recorded hello was %s" % got, c.summary())
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("worker", 0), ("ps", 0)])
        finish(C, "a replayed recorded hello", c, oracle)
        said = c.task("chief", 0).stderr()
        C.check("failed authentication" in said, "replay: the chief logged no drop", said[-1500:])
    finally:
        c.kill()


def huge_init_case(C, tmp, data):
    """A fake chief (holding the secret) feeds the real ps an INIT of 2^62."""
    import struct
    spec = TC.cluster_spec(1, 0, 1)
    host, port = hp(spec, "chief")
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen(4)
    f = os.path.join(tmp, "huge")
    c = TC.Cluster(f, spec)
    try:
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=ENV, which=[("ps", 0)])
        s = TA.accept_as(lst, KEY)
        # meta, then options, params and state (2^62 * 4 bytes wraps to 0), then a step:
        # without the bound the ps averages 2^62 floats of 1-byte buffers (SIGSEGV).
        s.sendall(TA.header(TA.PS_INIT, 24) + struct.pack("<QIII4x", 1 << 62, 0, 1, 1) +
                  TA.header(TA.PS_INIT, 0) * 3 + TA.header(TA.PS_PUSH, 0))
        c.wait(20)
        ps = c.task("ps", 0)
        err = ps.stderr()
        if C.check(ps.rc is not None and 0 < ps.rc < 128 and "bad init" in err and
                   "2^40" in err, "INIT of 2^62: ps exit %s" % ps.rc, err[-1500:]):
            C.ok("INIT of 2^62 elements: ps exit %d: %s" % (ps.rc, err.strip().splitlines()[-1]))
        s.close()
    finally:
        lst.close()
        c.kill()


def local_address():
    """This host's own non-loopback IPv4 address, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        a = s.getsockname()[0]
        return None if a.startswith("127.") else a
    except OSError:
        return None
    finally:
        s.close()


def refusal_case(C, tmp, data):
    p = TC.free_ports(2)
    spec = {"chief": ["127.0.0.1:%d" % p[0]], "worker": ["192.0.2.7:%d" % p[1]]}
    f = os.path.join(tmp, "refuse")
    c = TC.Cluster(f, spec)
    env = {"TFDIST_SECRET": ""}
    try:
        t0 = time.monotonic()
        c.start(args(f, data), limit_s=LIMIT_S, env_extra=env, which=[("chief", 0)])
        c.wait(10)
        t = c.tasks[0]
        err = t.stderr().strip()
        if C.check(t.rc == 2 and time.monotonic() - t0 < 10 and "TFDIST_SECRET" in err and
                   "--secret-file" in err and len(err.splitlines()) == 1,
                   "non-loopback without a secret: exit %s" % t.rc, err):
            C.ok("non-loopback without a secret: exit 2: %s" % err)
        # --insecure-cluster: it starts (listens), then times out on the absent worker.
        c.start(args(f, data, ["--insecure-cluster", "--timeout", "3"]), limit_s=LIMIT_S,
                env_extra=env, which=[("chief", 0)])
        t = c.tasks[1]
        C.check(wait_listening("127.0.0.1", p[0], 5), "--insecure-cluster: the chief never listened",
                t.stderr())
        c.wait(15)
        C.check(t.rc not in (0, None) and "TFDIST_SECRET" not in t.stderr(),
                "--insecure-cluster: exit %s" % t.rc, t.stderr())
    finally:
        c.kill()
    rc, _, err = TC.run_plain(os.path.join(tmp, "plain-sf"), data, ["--secret-file", "x"])
    err = err.strip()
    if C.check(rc == 2 and "TF_CONFIG" in err and len(err.splitlines()) == 1,
               "--secret-file without TF_CONFIG: exit %s" % rc, err):
        C.ok("--secret-file without TF_CONFIG: exit 2: %s" % err)
    sf = os.path.join(tmp, "secret")
    cases = [("mode 644", 0o644, SECRET, "group or others"), ("8 bytes", 0o600, "12345678",
             "shorter than 16 bytes"), ("a folder", None, None, "not a regular file")]
    for what, mode, text, want in cases:
        path = sf + "-" + what.replace(" ", "")
        if mode is None:
            os.mkdir(path)
        else:
            with open(path, "w") as fh:
                fh.write(text)
            os.chmod(path, mode)
        c = TC.Cluster(os.path.join(tmp, "sf-" + what.replace(" ", "")), spec)
        try:
            c.start(args(c.folder, data, ["--secret-file", path]), limit_s=LIMIT_S,
                    env_extra=env, which=[("chief", 0)])
            c.wait(10)
        finally:
            c.kill()
        t = c.tasks[0]
        err = t.stderr().strip()
        if C.check(t.rc == 2 and want in err and len(err.splitlines()) == 1,
                   "--secret-file %s: exit %s" % (what, t.rc), err):
            C.ok("--secret-file %s: exit 2: %s" % (what, err))


def non_loopback_case(C, tmp, data, oracle):
    addr = local_address()
    if addr is None:
        print("skip: this host has no non-loopback IPv4 address", flush=True)
        return
    p = TC.free_ports(3)
    spec = {"chief": ["%s:%d" % (addr, p[0])], "worker": ["%s:%d" % (addr, p[1])],
            "ps": ["%s:%d" % (addr, p[2])]}
    sf = os.path.join(tmp, "job.secret")
    fd = os.open(sf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, KEY + b"\n")
    os.close(fd)
    f = os.path.join(tmp, "nonloop")
    c = TC.Cluster(f, spec).start(args(f, data, ["--secret-file", sf]), limit_s=LIMIT_S,
                                  env_extra={"TFDIST_SECRET": ""})
    finish(C, "a cluster on %s with --secret-file" % addr, c, oracle)
    # The chief bound only its own address: loopback finds nothing on its port.
    # (Checked by a plain connect while a fresh chief waits.)
    c = TC.Cluster(os.path.join(tmp, "bind"), spec)
    try:
        c.start(args(c.folder, data, ["--secret-file", sf]), limit_s=LIMIT_S,
                env_extra={"TFDIST_SECRET": ""}, which=[("chief", 0)])
        C.check(wait_listening(addr, p[0]), "bind: the chief never listened on %s" % addr)
        if C.check(not wait_listening("127.0.0.1", p[0], 1),
                   "bind: the chief listens on 127.0.0.1 too (every interface)"):
            C.ok("the chief listens on %s only, not on 127.0.0.1" % addr)
    finally:
        c.kill()


def hostname_case(C, tmp, data):
    """A host name its own host maps to loopback (Debian's /etc/hosts) is how
    the other hosts reach it: that task listens on every interface; without
    a secret it is refused like any name that is not loopback."""
    name, addr = socket.gethostname(), local_address()
    try:
        mapped = {ai[4][0] for ai in socket.getaddrinfo(name, None)}
    except OSError:
        mapped = set()
    if not mapped or not all(a.startswith("127.") or a == "::1" for a in mapped) or addr is None:
        print("skip: %s does not resolve to loopback only here" % name, flush=True)
        return
    p = TC.free_ports(2)
    spec = {"chief": ["%s:%d" % (name, p[0])], "worker": ["%s:%d" % (name, p[1])]}
    c = TC.Cluster(os.path.join(tmp, "hostname"), spec)
    try:
        c.start(args(c.folder, data), limit_s=LIMIT_S, env_extra={"TFDIST_SECRET": ""},
                which=[("chief", 0)])
        c.wait(10)
        C.check(c.tasks[0].rc == 2 and "TFDIST_SECRET" in c.tasks[0].stderr(),
                "host name %s without a secret: exit %s" % (name, c.tasks[0].rc), c.tasks[0].stderr())
        c.start(args(c.folder, data), limit_s=LIMIT_S, env_extra=ENV, which=[("chief", 0)])
        if C.check(wait_listening(addr, p[0]), "host name %s (%s here): the chief does not listen "
                   "on %s" % (name, sorted(mapped), addr), c.summary()):
            C.ok("host name %s (%s here): refused without a secret; with one it listens on %s too"
                 % (name, ", ".join(sorted(mapped)), addr))
    finally:
        c.kill()


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"), n_train=600, n_test=100)
        oracle = oracle_case(C, tmp, data)
        if oracle is None:
            return C.verdict()
        fake_case(C, tmp, data, oracle, "ps")
        fake_case(C, tmp, data, oracle, "worker")
        garbage_case(C, tmp, data, oracle)
        replay_case(C, tmp, data, oracle)
        huge_init_case(C, tmp, data)
        refusal_case(C, tmp, data)
        non_loopback_case(C, tmp, data, oracle)
        hostname_case(C, tmp, data)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
