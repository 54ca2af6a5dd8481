#!/usr/bin/python3
"""Two `tfdist serve` binaries on one load, alternated in one run: requests/s
and latency of POST /score at 32 kept-alive connections, over plain HTTP for
both and over HTTPS (and HTTPS with a Bearer key) for the one that has it.

  benchmarks/serve/serve_ab.py --before BIN --after BIN [--clients 32]
      [--rows 1] [--seconds 4] [--rounds 3] [--threads 4] [--model PATH]

Clients are processes (no shared GIL), each on one connection, sending the
next request when the answer arrives; on a 2-CPU machine they share the CPUs
with the server, so the numbers are a floor. Every answer is compared with a
float64 numpy oracle; a wrong one makes the script exit 1."""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import load_weights, logits, train_model  # noqa: E402


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def client(port, tls_ca, key, body, want, seconds, q):
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port)
    hdrs = {"Content-Type": "application/json"}
    if key:
        hdrs["Authorization"] = "Bearer " + key
    lat, bad = [], 0
    c.request("POST", "/score", body, hdrs)  # the handshake, outside the timing
    c.getresponse().read()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        c.request("POST", "/score", body, hdrs)
        r = c.getresponse()
        got = r.read()
        lat.append(time.perf_counter() - t)
        bad += r.status != 200 or json.loads(got) != want
    q.put((lat, bad))


def load(port, tls_ca, key, body, want, args):
    q = mp.Queue()
    ps = [mp.Process(target=client, args=(port, tls_ca, key, body, want, args.seconds, q))
          for _ in range(args.clients)]
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    lat = sorted(x for r in res for x in r[0])
    return {"rps": len(lat) / args.seconds, "p50_ms": 1e3 * lat[len(lat) // 2],
            "p99_ms": 1e3 * lat[int(len(lat) * 0.99)], "bad": sum(r[1] for r in res)}


def make_tls(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run(["openssl", "req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                                            "-subj", "/CN=bench CA"])
    run(["openssl", "req"] + ec + ["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"])
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext"])
    key = "bench-key-0123456789abcdefghij"
    path = os.path.join(d, "keys")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (key + "\n").encode())
    os.close(fd)
    return [os.path.join(d, n) for n in ("ca.pem", "srv.pem", "srv.key")] + [path, key]


def start(binary, model, threads, extra):
    p = subprocess.Popen([binary, "serve", "--model", model, "--port", "0", "--threads",
                          str(threads), "--access-log", "off"] + extra,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    return p, int(re.search(r"https?://[0-9.]+:([0-9]+)", line).group(1))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--model")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="tfdist-serve-ab-")
    model = args.model or train_model(args.after, d)
    layers = load_weights(model)
    x = __import__("numpy").random.default_rng(11).random((args.rows, 784))
    want = logits(layers, x, __import__("numpy").float64).argmax(axis=1).tolist()
    body = json.dumps({"data": x.tolist()})
    ca, cert, tkey, keys, key = make_tls(d)
    configs = [("before http", args.before, [], None, None),
               ("after http", args.after, [], None, None),
               ("after https", args.after, ["--tls-cert", cert, "--tls-key", tkey], ca, None),
               ("after https+key", args.after, ["--tls-cert", cert, "--tls-key", tkey,
                                                "--auth-key-file", keys], ca, key)]
    servers = {name: start(b, model, args.threads, extra) for name, b, extra, _, _ in configs}
    rows = {name: [] for name, *_ in configs}
    try:
        for _ in range(args.rounds):
            for name, _, _, tls_ca, k in configs:
                rows[name].append(load(servers[name][1], tls_ca, k, body, want, args))
    finally:
        for p, _ in servers.values():
            p.terminate()
            p.wait(timeout=20)
    print(f"# POST /score, {args.rows} row(s) per request, {args.clients} client processes on "
          f"one kept-alive connection each, {args.threads} server threads, {args.rounds} "
          f"alternating rounds of {args.seconds} s; {os.cpu_count()} CPUs; medians of the rounds")
    print(f"{'server':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  wrong answers")
    for name, rs in rows.items():
        print(f"{name:16} {statistics.median(r['rps'] for r in rs):9.0f} "
              f"{statistics.median(r['p50_ms'] for r in rs):8.2f} "
              f"{statistics.median(r['p99_ms'] for r in rs):8.2f}  {sum(r['bad'] for r in rs)}")
    print(json.dumps({name: [round(r["rps"]) for r in rs] for name, rs in rows.items()}))
    return 1 if any(r["bad"] for rs in rows.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
