#!/usr/bin/python3
"""Measuring helpers for bench/bench.py: free ports, process and machine CPU, RSS, output
parsers, the ClientHellos and request files of tpt_loadgen, and the idle-tunnel client and
backend. Standard library only (and the e2e tests' port allocator); loopback only.

    lib.py idle-backend PORT STATUS   accepts and holds connections, writes the count to STATUS
                                      (run as a subprocess by bench.py; ended by SIGTERM)
"""
import json
import os
import random
import re
import selectors
import socket
import statistics
import struct
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


# --- /proc ----------------------------------------------------------------------------------

def cpu_seconds(pids):
    """utime+stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces: fields count from after its closing ")".
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def task_cpu_seconds(pids):
    """CPU time of the processes' live threads from the scheduler's own account
    (/proc/PID/task/TID/schedstat, nanoseconds), where utime+stime move in 10 ms ticks. The
    time of threads that have exited is not in it: for processes whose threads live as long
    as the measurement (tpt's workers)."""
    total = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:  # the thread ended between listdir and open
                pass
    return total / 1e9


def thread_cpu_seconds(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds():
    """Busy time of all CPUs together (everything but idle and iowait), in seconds."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def rss_bytes(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def children(pid):
    """The pids of pid's direct children (nginx's and squid's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return sorted(found)


def listen_inodes(port, host="127.0.0.1"):
    """The socket inodes listening on host:port, an IPv4 address (read from /proc, without
    connecting: a probe connection would count as a test for iperf3)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A = TCP_LISTEN
                found.add(fields[9])
    return found


def listening(port, host="127.0.0.1"):
    return bool(listen_inodes(port, host))


def holding(pids, inodes):
    """The pids among `pids` that hold a descriptor of one of the socket `inodes`."""
    links = {f"socket:[{i}]" for i in inodes}
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in links for fd in fds):
                found.append(pid)
        except OSError:
            continue  # the process or the descriptor went away meanwhile
    return found


def wait_for(predicate, seconds, interval=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- tool outputs ---------------------------------------------------------------------------

def parse_iperf(path):
    with open(path) as f:
        data = json.load(f)
    if "error" in data:
        raise SystemExit(f"iperf3: {data['error']}")
    end = data["end"]["sum_received"]
    return end["bits_per_second"], end["bytes"]


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text):
    """(requests/s, p99 ms, errors) of `wrk --latency` output."""
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


def parse_perf_syscalls(path):
    """{syscall: count} of `perf stat -x, -e 'syscalls:sys_enter_*'` output, non-zero only."""
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) < 3 or not fields[2].startswith("syscalls:sys_enter_"):
                continue
            try:
                n = int(fields[0])
            except ValueError:
                continue  # <not counted>, <not supported>
            if n:
                counts[fields[2][len("syscalls:sys_enter_"):]] = n
    return counts


def parse_strace_summary(path):
    """{syscall: calls} of `strace -c` output (the fallback where perf has no tracepoints)."""
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    return counts


# --- ClientHellos and request files ---------------------------------------------------------

def _u16(n):
    return struct.pack("!H", n)


def _hello_extensions(record):
    """(bytes before the extensions block, [(type, data)]) of a one-record ClientHello."""
    if record[0] != 22 or record[5] != 1:
        raise ValueError("not a TLS handshake record carrying a ClientHello")
    body = record[9:9 + int.from_bytes(record[6:9], "big")]
    pos = 2 + 32                                  # client_version, random
    pos += 1 + body[pos]                          # session_id
    pos += 2 + int.from_bytes(body[pos:pos + 2], "big")   # cipher_suites
    pos += 1 + body[pos]                          # compression_methods
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    head, pos = body[:pos], pos + 2
    extensions = []
    while pos < end:
        ext_type = int.from_bytes(body[pos:pos + 2], "big")
        length = int.from_bytes(body[pos + 2:pos + 4], "big")
        extensions.append((ext_type, body[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return head, extensions


def hello_with_sni(template, name):
    """The captured ClientHello `template` (one TLS record) with its server_name extension
    (RFC 6066 §3) carrying `name` instead; every enclosing length is recomputed (extension,
    extensions block, handshake message, record). A padding extension (RFC 7685, which
    OpenSSL adds to keep a hello of 256-511 bytes out of that range) shrinks or grows by
    the name's change, so the hello keeps its captured size where it can."""
    head, extensions = _hello_extensions(template)
    host = name.encode("ascii")
    server_name = b"\x00" + _u16(len(host)) + host             # host_name(0)
    sni = _u16(len(server_name)) + server_name
    delta = 0
    out = []
    for ext_type, data in extensions:
        if ext_type == 0:
            delta = len(sni) - len(data)
            data = sni
        out.append([ext_type, data])
    for ext in out:
        if ext[0] == 21 and len(ext[1]) >= delta:   # padding: zero bytes
            ext[1] = bytes(len(ext[1]) - delta)
    if not any(t == 0 for t, _ in out):
        raise ValueError("the template has no server_name extension")
    block = b"".join(_u16(t) + _u16(len(d)) + d for t, d in out)
    body = head + _u16(len(block)) + block
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return template[:3] + _u16(len(handshake)) + handshake


def hello_sni(record):
    """The host_name of a one-record ClientHello (to check hello_with_sni's output)."""
    for ext_type, data in _hello_extensions(record)[1]:
        if ext_type == 0:
            return data[5:5 + int.from_bytes(data[3:5], "big")].decode("ascii")
    return None


def write_requests(path, entries):
    """tpt_loadgen's request file (bench/loadgen/wire.hpp): entries of (backend index,
    prelude bytes, payload bytes)."""
    with open(path, "wb") as f:
        for backend, prelude, payload in entries:
            f.write(struct.pack("!HI", backend, len(prelude)) + prelude)
            f.write(struct.pack("!I", len(payload)) + payload)


def connect_prelude(target):
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii")


def http_request_head(host):
    return (f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tpt-loadgen\r\n"
            f"Accept: */*\r\n\r\n").encode("ascii")


# --- idle tunnels ---------------------------------------------------------------------------

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
    while True:  # ended by SIGTERM from bench.py
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


def idle_tunnels_rss(port, n, status_path, seconds, pids):
    """Opens n connections to port, waits until the idle backend holds n, and returns
    (RSS of pids before, after, n); closes them all before returning."""
    if not wait_for(lambda: read_count(status_path) == 0, seconds):
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
        if not wait_for(lambda: read_count(status_path) == n,
                        max(0.1, deadline - time.monotonic())):
            raise SystemExit(f"backend holds {read_count(status_path)} of {n} tunnels "
                             f"at the deadline")
        time.sleep(1.0)
        return before, rss_bytes(pids), n
    finally:
        for s in socks:
            s.close()


def main(argv):
    if len(argv) == 4 and argv[1] == "idle-backend":
        idle_backend(int(argv[2]), argv[3])
        return 0
    raise SystemExit(__doc__)


def median_interval(values, resamples=10000, seed=1):
    """The 2.5th and 97.5th percentiles of the median over bootstrap resamples of `values`:
    how far the median ratio could be from the true one, given the spread of the rounds."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(resamples))
    return medians[int(resamples * 0.025)], medians[int(resamples * 0.975) - 1]


if __name__ == "__main__":
    sys.exit(main(sys.argv))

