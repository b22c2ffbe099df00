#!/usr/bin/python3
"""Helpers for bench/run.sh: free ports, process CPU and RSS, output parsers, the idle-tunnel
client and backend, and the final table. Standard library only (and the e2e tests' port
allocator); loopback only.

  lib.py ports N                      N free loopback TCP ports, one per line
  lib.py cpu PID...                   utime+stime of the processes, in seconds
  lib.py rss PID...                   summed VmRSS of the processes, in bytes
  lib.py wait-port PORT SECONDS       exit 0 once 127.0.0.1:PORT listens, 1 at the deadline
  lib.py iperf JSON                   "<bits_per_second> <bytes>" of an iperf3 -J result
  lib.py wrk TEXT                     "<requests_per_second> <p99_ms> <errors>" of wrk --latency
  lib.py idle-backend PORT STATUS     accepts and holds connections, writes the count to STATUS
  lib.py idle-client PORT N STATUS SECONDS PID...
                                      opens N connections to PORT, waits until the backend
                                      holds N, prints "<rss_before> <rss_after> <n>" of PIDs
  lib.py table RESULTS                prints the comparison table of a results file (medians)
"""
import json
import os
import re
import selectors
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from helpers import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    """n distinct loopback ports for the proxies and backends to listen on, from the e2e
    tests' allocator: outside the kernel's ephemeral range, so that no outgoing connection of
    the benchmark's clients takes one before its server binds it."""
    return [free_port() for _ in range(n)]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces: fields count from after its closing ")".
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def rss_bytes(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def listening(port):
    """True when a socket listens on 127.0.0.1:port (read from /proc, without connecting: a
    probe connection would count as a test for iperf3)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A = TCP_LISTEN
                return True
    return False


def wait_port(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if listening(port):
            return True
        time.sleep(0.05)
    return False


def parse_iperf(path):
    with open(path) as f:
        data = json.load(f)
    if "error" in data:
        raise SystemExit(f"iperf3: {data['error']}")
    end = data["end"]["sum_received"]
    return end["bits_per_second"], end["bytes"]


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(path):
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if not rps or not p99:
        raise SystemExit(f"cannot parse wrk output:\n{text}")
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    return float(rps.group(1)), float(p99.group(1)) * UNITS[p99.group(2)], errors


def idle_backend(port, status_path):
    """Accepts connections and keeps them open without sending; counts the open ones."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    open_count = 0
    last_written = -1

    def publish():
        nonlocal last_written
        if open_count != last_written:
            tmp = status_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(open_count))
            os.replace(tmp, status_path)
            last_written = open_count

    publish()
    while True:  # ended by SIGTERM from run.sh
        for key, _ in sel.select(timeout=0.1):
            if key.data is None:
                for _ in range(256):
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    open_count += 1
            else:
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    open_count -= 1
        publish()


def read_count(status_path):
    try:
        return int(open(status_path).read() or 0)
    except (OSError, ValueError):
        return -1


def wait_count(status_path, want, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read_count(status_path) == want:
            return True
        time.sleep(0.05)
    return False


def idle_client(port, n, status_path, seconds, pids):
    if not wait_count(status_path, 0, seconds):
        raise SystemExit(f"idle backend still holds {read_count(status_path)} connections")
    time.sleep(1.0)  # let the proxy settle after the previous test (RSS is sampled, not synced)
    before = rss_bytes(pids)
    socks = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        if not wait_count(status_path, n, max(0.1, deadline - time.monotonic())):
            raise SystemExit(f"backend holds {read_count(status_path)} of {n} tunnels "
                             f"at the deadline")
        time.sleep(1.0)
        after = rss_bytes(pids)
        print(before, after, n)
    finally:
        for s in socks:
            s.close()


def fmt_value(key, v):
    if v is None:
        return "-"
    if key == "throughput":
        return f"{v / 1e9:.2f} Gbit/s"
    if key in ("rps_keepalive", "rps_close"):
        return f"{v:,.0f}/s"
    if key == "p99_keepalive":
        return f"{v:.2f} ms"
    if key == "rss_per_tunnel":
        return f"{v:,.0f} B"
    if key == "cpu_per_gb":
        return f"{v:.2f} s"
    return str(v)


# metric key, label, True when larger is better, target for tpt/haproxy
METRICS = [
    ("throughput", "single-stream throughput (iperf3)", True, ">= 1.2"),
    ("rps_keepalive", "keep-alive requests/s (wrk -c64)", True, None),
    ("p99_keepalive", "keep-alive p99 latency", False, "<= 1.0"),
    ("rps_close", "new connections/s (Connection: close)", True, ">= 1.1"),
    ("rss_per_tunnel", "RSS per idle tunnel", False, "<= 0.5"),
    ("cpu_per_gb", "CPU seconds per GB relayed", False, None),
]


def table(path):
    """One row per metric, one column per proxy (the median of its runs), ratios to HAProxy."""
    runs = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            runs.setdefault(rec["metric"], {}).setdefault(rec["who"], []).append(rec["value"])
    results = {m: {who: statistics.median(v) for who, v in by.items()} for m, by in runs.items()}
    present = {who for by in results.values() for who in by}
    order = ("direct", "tpt", "tpt-copy", "tpt-splice", "haproxy", "haproxy-splice", "nginx")
    columns = [c for c in order if c in present]
    compared = [c for c in columns if c not in ("direct", "haproxy")]
    header = ["metric"] + columns + [f"{c}/haproxy" for c in compared] + ["tpt target"]
    rows = []
    for key, label, _, target in METRICS:
        if key not in results:
            continue
        vals = results[key]
        row = [label] + [fmt_value(key, vals.get(c)) for c in columns]
        base = vals.get("haproxy")
        for who in compared:
            v = vals.get(who)
            row.append(f"{v / base:.2f}x" if v is not None and base else "-")
        if target and vals.get("tpt") is not None and base:
            ratio = vals["tpt"] / base
            op, bound = target.split()
            ok = ratio >= float(bound) if op == ">=" else ratio <= float(bound)
            row.append(f"{target} {'met' if ok else 'MISSED'}")
        else:
            row.append(target or "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "cpu":
        print(f"{cpu_seconds(args):.3f}")
    elif cmd == "rss":
        print(rss_bytes(args))
    elif cmd == "wait-port":
        return 0 if wait_port(int(args[0]), float(args[1])) else 1
    elif cmd == "iperf":
        bps, nbytes = parse_iperf(args[0])
        print(f"{bps:.0f} {nbytes}")
    elif cmd == "wrk":
        rps, p99, errors = parse_wrk(args[0])
        print(f"{rps:.1f} {p99:.3f} {errors}")
    elif cmd == "idle-backend":
        idle_backend(int(args[0]), args[1])
    elif cmd == "idle-client":
        idle_client(int(args[0]), int(args[1]), args[2], float(args[3]), args[4:])
    elif cmd == "table":
        table(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
