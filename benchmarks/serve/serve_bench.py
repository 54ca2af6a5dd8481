#!/usr/bin/python3
"""Scoring throughput and latency: `tfdist serve` against a peer, the same
/score endpoint in Python (the standard library's ThreadingHTTPServer and a
numpy float32 forward pass, the shape of an Azure ML scoring script), on the
same model, rows and client load, measured alternately in one run.

  benchmarks/serve/serve_bench.py [--tfdist build/cli/tfdist] [--clients 4]
      [--rows 1] [--seconds 3] [--rounds 3] [--threads 4] [--model PATH]

Without --model it trains a small model on synthetic data first. Every
answer is checked against a float64 numpy oracle, so neither side can win by
answering wrong. Clients are processes (no shared GIL), each on one kept-alive
connection, sending the next request as soon as the answer arrives."""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def load_weights(path):
    with h5py.File(path, "r") as f:
        g = f["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["layer_names"]]
        return [(np.array(g[n][n]["kernel:0"]), np.array(g[n][n]["bias:0"])) for n in names]


def logits(layers, x, dtype):
    h = x.astype(dtype)
    for k, (w, b) in enumerate(layers):
        h = h @ w.astype(dtype) + b.astype(dtype)
        if k + 1 < len(layers):
            h = np.maximum(h, 0)
    return h


def peer_server(layers):
    """The peer: POST /score -> classes, float32 numpy, one thread per request."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body wait on a delayed ACK

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            x = np.asarray(json.loads(body)["data"], dtype=np.float32)
            out = json.dumps(logits(layers, x, np.float32).argmax(axis=1).tolist()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def client(port, body, want, seconds, q):
    c = http.client.HTTPConnection("127.0.0.1", port)
    lat, bad = [], 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        c.request("POST", "/score", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        got = r.read()
        lat.append(time.perf_counter() - t)
        bad += r.status != 200 or json.loads(got) != want
    q.put((lat, bad))


def load(port, body, want, args):
    q = mp.Queue()
    ps = [mp.Process(target=client, args=(port, body, want, args.seconds, q))
          for _ in range(args.clients)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for r in res for x in r[0])
    return {"rps": len(lat) / wall, "p50_ms": 1e3 * lat[len(lat) // 2],
            "p99_ms": 1e3 * lat[int(len(lat) * 0.99)], "bad": sum(r[1] for r in res)}


def train_model(tfdist, d):
    import idxgen
    idxgen.write_set(os.path.join(d, "data"), np.random.default_rng(7), 3000, 500, gz=False)
    subprocess.run([tfdist, "train", "--data-folder", os.path.join(d, "data"), "--epochs", "2",
                    "--outputs", os.path.join(d, "out"), "--progress", "off"], check=True,
                   capture_output=True)
    return os.path.join(d, "out", "model", "model.h5")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--tfdist", default="build/cli/tfdist")
    ap.add_argument("--model")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="tfdist-serve-bench-")
    model = args.model or train_model(args.tfdist, d)
    layers = load_weights(model)
    x = np.random.default_rng(11).random((args.rows, 784))
    want = logits(layers, x, np.float64).argmax(axis=1).tolist()
    body = json.dumps({"data": x.tolist()})
    srv = subprocess.Popen([args.tfdist, "serve", "--model", model, "--port", "0", "--threads",
                            str(args.threads), "--access-log", "off"],
                           stdout=subprocess.PIPE, text=True)
    port = int(re.search(r":([0-9]+)$", srv.stdout.readline().strip()).group(1))
    peer, peer_port = peer_server(layers)
    rows = {"tfdist": [], "python": []}
    try:
        for r in range(args.rounds):
            # progress on stderr: each round takes 2 x --seconds
            print(f"[round {r + 1}/{args.rounds}] tfdist, then python", file=sys.stderr, flush=True)
            rows["tfdist"].append(load(port, body, want, args))
            rows["python"].append(load(peer_port, body, want, args))
    finally:
        srv.terminate()
        srv.wait(timeout=20)
        peer.shutdown()
    print(f"# POST /score, {args.rows} row(s) per request, {args.clients} client processes, "
          f"{args.threads} server threads, {args.rounds} alternating rounds of {args.seconds} s; "
          f"{os.cpu_count()} CPUs")
    print(f"{'server':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  wrong answers")
    med = {}
    for k, rs in rows.items():
        med[k] = statistics.median(r["rps"] for r in rs)
        print(f"{k:8} {med[k]:9.0f} {statistics.median(r['p50_ms'] for r in rs):8.3f} "
              f"{statistics.median(r['p99_ms'] for r in rs):8.3f}  {sum(r['bad'] for r in rs)}")
    print(f"ratio tfdist/python req/s: {med['tfdist'] / med['python']:.2f}x")
    print(json.dumps({"benchmark": "serve", "rows": args.rows, "clients": args.clients,
                      "tfdist_rps": med["tfdist"], "python_rps": med["python"],
                      "ratio": med["tfdist"] / med["python"]}))
    return 1 if any(r["bad"] for rs in rows.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
