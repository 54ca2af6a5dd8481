#!/usr/bin/python3
"""Issue 19's probes (tests/serveprobes.py) on two `tfdist serve` binaries,
one after the other in one run, each on a fresh server per probe: 40
connections holding bodies just under 16 MiB; slow-loris clients from four
addresses under ulimit -n 128; one request of just under 16 MiB, and four at
once. Prints one JSON line per probe and binary.

  benchmarks/serve/serve_probes.py --before BIN --after BIN [--model PATH]"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serveclient  # noqa: E402
import serveprobes as P  # noqa: E402
from serve_bench import train_model  # noqa: E402


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def four_at_once(srv, body):
    """Four clients each send body at once: the peak RSS above idle (MB)."""
    pid = srv.p.pid
    idle = P.rss_mb(pid)
    P.reset_peak(pid)
    sampler = P.Sampler(pid)
    statuses = []

    def one():
        s = socket.create_connection((srv.host, srv.port), timeout=120)
        s.sendall(b"POST /score HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d"
                  b"\r\n\r\n" % len(body) + body)
        got = b""
        while True:
            c = s.recv(1 << 20)
            if not c:
                break
            got += c
        statuses.append(got.split(b" ", 2)[1].decode() if got else None)

    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    peak = max(sampler.stop(), P.rss_mb(pid, "VmHWM"))
    return {"statuses": statuses, "idle_mb": idle, "peak_above_mb": peak - idle}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--model")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="tfdist-serve-probes-")
    model = args.model or train_model(args.after, d)
    body, n = P.rows_body("data", 16 * P.MIB - 64)
    body_short, n_short = P.rows_body("data", 16 * P.MIB - 64, short=True)
    for label, binary, extra in (("before", args.before, []),
                                 ("after", args.after, ["--max-conns-per-ip", "30"])):
        base = ["--model", model, "--port", "0", "--threads", "2", "--access-log", "off"]
        srv = serveclient.Server(binary, base, d, label + "-held")
        try:
            print(json.dumps({"probe": "held bodies", "server": label,
                              **P.held_bodies(srv, P.small_score_body())}), flush=True)
        finally:
            srv.stop()
        wrap = os.path.join(d, f"{label}-ulimit")
        with open(wrap, "w") as f:
            f.write('#!/bin/sh\nulimit -n 128 || exit 99\nexec "%s" "$@"\n' % binary)
        os.chmod(wrap, 0o755)
        srv = serveclient.Server(wrap, base + ["--header-timeout", "3"] + extra, d, label + "-loris")
        try:
            print(json.dumps({"probe": "slow loris", "server": label, **P.slow_loris(srv, run_s=9.0)}),
                  flush=True)
        finally:
            srv.stop()
        srv = serveclient.Server(binary, base, d, label + "-big")
        try:
            print(json.dumps({"probe": "one 16 MiB", "server": label, "rows": n,
                              **P.one_big(srv, body)}), flush=True)
            print(json.dumps({"probe": "one 16 MiB, digits", "server": label, "rows": n_short,
                              **P.one_big(srv, body_short)}), flush=True)
            print(json.dumps({"probe": "four 16 MiB", "server": label, **four_at_once(srv, body)}),
                  flush=True)
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
