#!/usr/bin/python3
"""SPEC §13 cost of a pool on the connect path: tpt's CPU per connection with a single
upstream URL against a 3-member round_robin pool, same backend process, same run, rounds
interleaved. Loopback only.

  bench/pool.py [TPT_BIN] [--rounds N] [--conns N]

Each round opens --conns sequential connections through one tpt (one byte out, its echo
back, close) and reads that tpt's CPU time (the scheduler's nanosecond account of its
threads, /proc/PID/task/*/schedstat) before and after. Prints the CPU per connection of both,
their ratio per round, the median ratio with a bootstrap 95 % interval, and the load average
(the figure is only meaningful on a quiet machine). The defaults (40 x 2,000 connections per
side) take about 100 s here, in a network namespace of their own when run as root; tpt's connections to the single URL's backend reuse TIME_WAIT
ports (net.ipv4.tcp_tw_reuse, 2 by default: loopback only).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE))
from helpers import EchoUpstream, TptProcess  # noqa: E402
from lib import free_ports, median_interval, task_cpu_seconds  # noqa: E402

CONFIG = """version: 1
log: warn
admin:
  listen: "127.0.0.1:{admin}"
servers:
  bench:
    listen: ["127.0.0.1:{port}"]
    default: up
upstream:
  up: {upstream}
"""


def start(binary, upstream):
    admin, port = free_ports(2)
    proc = TptProcess(binary, CONFIG.format(admin=admin, port=port, upstream=upstream),
                      workdir=tempfile.mkdtemp(prefix="tpt-bench-pool-"))
    return proc, port


def connections(port, n):
    for i in range(n):
        # Source addresses across 127.0.0.0/8: the client closes first, and thousands of
        # TIME_WAIT pairs from one address would exhaust its ephemeral ports.
        with socket.socket() as s:
            s.settimeout(5)
            s.bind((f"127.0.{i // 250 % 250 + 1}.{i % 250 + 2}", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("no echo")


def measure(proc, port, n):
    before = task_cpu_seconds([proc.popen.pid])
    connections(port, n)
    time.sleep(0.2)  # the last tunnels' teardown, counted in this round
    return (task_cpu_seconds([proc.popen.pid]) - before) / n


def own_namespace():
    """As root, re-runs this script in a network namespace of its own (`unshare -n`, lo up):
    the TIME_WAIT sockets of earlier runs and other tests' connections stay outside."""
    if os.geteuid() != 0 or os.environ.get("TPT_POOL_NETNS") == "1":
        if os.environ.get("TPT_POOL_NETNS") == "1":
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    env = dict(os.environ, TPT_POOL_NETNS="1")
    sys.exit(subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__)] +
                            sys.argv[1:], env=env).returncode)


def main():
    own_namespace()
    ap = argparse.ArgumentParser()
    ap.add_argument("tpt", nargs="?", default=str(HERE.parent / "build" / "release" / "tpt"))
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--conns", type=int, default=2000)
    args = ap.parse_args()
    backends = [EchoUpstream() for _ in range(3)]
    single = f'"tcp://127.0.0.1:{backends[0].port}"'
    members = ", ".join(f'"tcp://127.0.0.1:{b.port}"' for b in backends)
    pool = f"{{servers: [{members}], strategy: round_robin}}"
    runs = {"single": start(args.tpt, single), "pool": start(args.tpt, pool)}
    try:
        for proc, port in runs.values():
            connections(port, 200)  # warm-up: DNS-free literals, pages touched
        ratios, per = [], {"single": [], "pool": []}
        for r in range(args.rounds):
            order = ["single", "pool"] if r % 2 == 0 else ["pool", "single"]
            got = {name: measure(*runs[name], args.conns) for name in order}
            for name, v in got.items():
                per[name].append(v)
            ratios.append(got["pool"] / got["single"])
            print(f"round {r + 1}: single {got['single'] * 1e6:.1f} us/conn, "
                  f"pool {got['pool'] * 1e6:.1f} us/conn, pool/single {ratios[-1]:.3f}")
        print(f"median CPU per connection: single {statistics.median(per['single']) * 1e6:.1f} us,"
              f" pool {statistics.median(per['pool']) * 1e6:.1f} us; median pool/single "
              f"{statistics.median(ratios):.3f} ({(statistics.median(ratios) - 1) * 100:+.1f} %)")
        low, high = median_interval(ratios)
        print(f"95 % interval of the median pool/single (bootstrap, {len(ratios)} rounds): "
              f"{low:.3f} .. {high:.3f}")
        print(f"load average during the run: {os.getloadavg()[0]:.2f} (1 min), "
              f"{os.cpu_count()} CPUs; CPU from /proc/PID/task/*/schedstat (ns)")
    finally:
        for proc, _ in runs.values():
            proc.stop()
        for b in backends:
            b.close()


if __name__ == "__main__":
    main()
