#!/usr/bin/python3
"""Soak test: runs tpt for a while under a mix of tunnels while its config is reloaded every
second, and checks that no byte is corrupted, no memory or descriptor leaks, and no tunnel
gets stuck.

    /usr/bin/python3 bench/soak.py [--seconds 600] [--tpt build/release/tpt]

Tunnels (all to local TCP backends, through a plain listener, a tls:true listener routed by
SNI, and a listener that exists only in every other config):
  short        echo of 1 B..64 KiB; the client half-closes after sending, sha256 checked
  half_closed  the client half-closes at once; the backend then streams up to 2 MiB to it
  long         echo paced over 3..20 s (about 1.5 MB/s), sha256 checked
  client_abort the client resets mid-stream; what it got must be a prefix of what was sent
  backend_abort the backend resets mid-stream; same prefix check

Every second the config is replaced (rename over: routes and listeners alternate between two
layouts) and waited for on /config; every fifth second a POST /reload re-applies it instead.
RSS and open descriptors of tpt are sampled every 2 s.

Passes (exit 0) when: every completed payload has the right sha256, every aborted one is a
prefix of the right bytes; no tunnel outlives its deadline; every reload succeeds and is live
within 2 s; RSS of the last quarter (median) is within max(10 %, 4 MiB) of the second
quarter's; descriptors return to their start count; tpt_active_connections is 0 at the end;
tpt never exits and its log holds no sanitizer report or error line. Prints the figures.
"""
import argparse
import hashlib
import os
import random
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "e2e"))
from helpers import (TptProcess, free_port, http_get, http_request, log_records,  # noqa: E402
                     metric_value, wait_until)
from tls_peers import client_hello  # noqa: E402

BLOCK = 64 * 1024
IO_TIMEOUT = 30.0  # a socket waiting this long for a byte counts as a stuck tunnel
LINGER_RST = struct.pack("ii", 1, 0)
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")
MiB = 1024 * 1024


# --- deterministic byte streams --------------------------------------------------------------

def stream_block(seed, k):
    return random.Random(seed * 1_000_003 + k).randbytes(BLOCK)


def stream_bytes(seed, n):
    """The first n bytes of the stream named by seed (backend and client agree on it)."""
    out = bytearray()
    k = 0
    while len(out) < n:
        out += stream_block(seed, k)
        k += 1
    return bytes(out[:n])


# --- backends --------------------------------------------------------------------------------

class Backend:
    """A threaded TCP server. Skips one TLS record if the connection starts with one (the
    ClientHello tpt forwards), then reads a command line:
      E\\n          echo until EOF, then close
      S n seed\\n   send n stream bytes, half-close, read until EOF
      R n seed\\n   send n stream bytes, then reset"""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.live = 0
        self.closing = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.closing:
                    conn.close()
                    return
                self.accepted += 1
                self.live += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        rfile = None
        try:
            conn.settimeout(IO_TIMEOUT)
            rfile = conn.makefile("rb")
            first = rfile.peek(1)[:1]
            if first == b"\x16":
                header = rfile.read(5)
                length = struct.unpack("!H", header[3:5])[0]
                rfile.read(length)
            line = rfile.readline(100).decode().split()
            if line and line[0] == "E":
                while True:
                    data = rfile.read1(65536)
                    if not data:
                        break
                    conn.sendall(data)
            elif line and line[0] in ("S", "R"):
                n, seed = int(line[1]), int(line[2])
                sent = 0
                k = 0
                while sent < n:
                    block = stream_block(seed, k)[:n - sent]
                    conn.sendall(block)
                    sent += len(block)
                    k += 1
                if line[0] == "R":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                else:
                    conn.shutdown(socket.SHUT_WR)
                    while rfile.read1(65536):
                        pass
        except OSError:
            pass  # aborted tunnels end here; the client side checks what matters
        finally:
            if rfile is not None:
                rfile.close()  # the socket closes (or resets) only once its file is closed
            conn.close()
            with self.lock:
                self.live -= 1

    def close(self):
        with self.lock:
            self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)


# --- configs ---------------------------------------------------------------------------------

def config_text(layout, ports, generation):
    """Layout 0 and 1 swap the routes of every server, and have the `extra` listener on
    ports["extra"] (0) or ports["other"] (1)."""
    a, b = ("back_a", "back_b") if layout == 0 else ("back_b", "back_a")
    extra = ports["extra"] if layout == 0 else ports["other"]
    return f"""\
# soak generation {generation}, layout {layout}
version: 2
log: info
admin:
  listen: "127.0.0.1:{ports['admin']}"
reload:
  watch: true
  poll_interval: 0s
servers:
  plain:
    listen: ["127.0.0.1:{ports['plain']}"]
    default: {a}
    maxclients: 1000
  tls:
    listen: ["127.0.0.1:{ports['tls']}"]
    tls: true
    client_hello_timeout: 10s
    sni:
      a.soak.test: {a}
      "*.soak.test": {b}
    default: {a}
    maxclients: 1000
  extra:
    listen: ["127.0.0.1:{extra}"]
    default: {b}
upstream:
  back_a: "tcp://127.0.0.1:{ports['back_a']}"
  back_b: "tcp://127.0.0.1:{ports['back_b']}"
"""


# --- clients ---------------------------------------------------------------------------------

class Failure(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.failures = []
        self.max_duration = 0.0

    def record(self, kind, outcome, sent, received, duration):
        with self.lock:
            key = f"{kind}/{outcome}"
            self.count[key] = self.count.get(key, 0) + 1
            self.bytes_sent += sent
            self.bytes_received += received
            self.max_duration = max(self.max_duration, duration)

    def fail(self, text):
        with self.lock:
            self.failures.append(text)


def recv_until_eof(sock, digest=None, keep=None, limit=None):
    """Reads until EOF. Returns (bytes count, reset?). digest: hashlib object to update;
    keep: bytearray to append to; limit: stop after this many bytes (returns reset=False)."""
    total = 0
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return total, True
        if not data:
            return total, False
        total += len(data)
        if digest is not None:
            digest.update(data)
        if keep is not None:
            keep += data
        if limit is not None and total >= limit:
            return total, False


class Client:
    def __init__(self, ports, hellos, stats, rng, stop):
        self.ports = ports
        self.hellos = hellos
        self.stats = stats
        self.rng = rng
        self.stop = stop  # long tunnels end early when the run ends

    def open(self, where):
        """A connection to a listener; for `tls` the ClientHello is sent first."""
        port = self.ports[where]
        sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        if where == "tls":
            sock.sendall(self.rng.choice(self.hellos))
        return sock

    def short(self, where):
        payload = self.rng.randbytes(self.rng.randint(1, 64 * 1024))
        digest = hashlib.sha256()
        with self.open(where) as s:
            s.sendall(b"E\n" + payload)
            s.shutdown(socket.SHUT_WR)
            got, reset = recv_until_eof(s, digest)
        if where == "alt" and got == 0:
            return "not_served", len(payload), 0  # accepted while its listener was removed
        if reset or got != len(payload) or digest.digest() != hashlib.sha256(payload).digest():
            raise Failure(f"short via {where}: sent {len(payload)}, got {got}, reset={reset}, "
                          "sha256 differs")
        return "ok", len(payload), got

    def half_closed(self, where):
        n, seed = self.rng.randint(64 * 1024, 2 * MiB), self.rng.randrange(1 << 30)
        digest = hashlib.sha256()
        with self.open(where) as s:
            s.sendall(f"S {n} {seed}\n".encode())
            s.shutdown(socket.SHUT_WR)
            got, reset = recv_until_eof(s, digest)
        if reset or got != n or digest.digest() != hashlib.sha256(stream_bytes(seed, n)).digest():
            raise Failure(f"half_closed via {where}: want {n}, got {got}, reset={reset}")
        return "ok", 0, got

    def long(self, where):
        seconds = self.rng.uniform(3, 20)
        seed = self.rng.randrange(1 << 30)
        sent_digest = hashlib.sha256()
        got_digest = hashlib.sha256()
        sent = [0]
        errors = []
        with self.open(where) as s:
            s.sendall(b"E\n")

            def send():
                try:
                    k = 0
                    end = time.monotonic() + seconds
                    while time.monotonic() < end and not self.stop.is_set():
                        block = stream_block(seed, k)[:16 * 1024]
                        s.sendall(block)
                        sent_digest.update(block)
                        sent[0] += len(block)
                        k += 1
                        time.sleep(0.01)  # pacing, about 1.5 MB/s
                    s.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    errors.append(exc)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            got, reset = recv_until_eof(s, got_digest)
            sender.join(IO_TIMEOUT)
        if errors or reset or got != sent[0] or got_digest.digest() != sent_digest.digest():
            raise Failure(f"long via {where}: sent {sent[0]}, got {got}, reset={reset}, "
                          f"errors={errors!r}")
        return "ok", sent[0], got

    def client_abort(self, where):
        n, seed = 4 * MiB, self.rng.randrange(1 << 30)
        stop_after = self.rng.randint(1, 512 * 1024)
        got = bytearray()
        with self.open(where) as s:
            s.sendall(f"S {n} {seed}\n".encode())
            _, reset = recv_until_eof(s, keep=got, limit=stop_after)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        if reset or len(got) < stop_after or bytes(got) != stream_bytes(seed, len(got)):
            raise Failure(f"client_abort via {where}: {len(got)} bytes before the reset are "
                          "not the stream's prefix")
        return "ok", 0, len(got)

    def backend_abort(self, where):
        n, seed = self.rng.randint(1, MiB), self.rng.randrange(1 << 30)
        got = bytearray()
        with self.open(where) as s:
            s.sendall(f"R {n} {seed}\n".encode())
            _, reset = recv_until_eof(s, keep=got)
        if len(got) > n or bytes(got) != stream_bytes(seed, len(got)):
            raise Failure(f"backend_abort via {where}: {len(got)} of {n} bytes are not the "
                          "stream's prefix")
        return ("reset" if reset else "eof"), 0, len(got)


def run_one(client, kind, where, stats, deadline_s):
    start = time.monotonic()
    try:
        outcome, sent, got = getattr(client, kind)(where)
    except Failure as exc:
        stats.fail(str(exc))
        outcome, sent, got = "FAILED", 0, 0
    except ConnectionRefusedError:
        if where != "alt":
            stats.fail(f"{kind} via {where}: connection refused")
        outcome, sent, got = "refused", 0, 0
    except socket.timeout:
        stats.fail(f"{kind} via {where}: no byte for {IO_TIMEOUT}s (stuck tunnel)")
        outcome, sent, got = "STUCK", 0, 0
    except OSError as exc:
        if where == "alt" and kind == "short":
            outcome, sent, got = "not_served", 0, 0
        else:
            stats.fail(f"{kind} via {where}: {exc!r}")
            outcome, sent, got = "FAILED", 0, 0
    took = time.monotonic() - start
    if took > deadline_s:
        stats.fail(f"{kind} via {where} took {took:.1f}s (deadline {deadline_s}s)")
    stats.record(kind, outcome, sent, got, took)


MIX = [("short", 40), ("half_closed", 20), ("client_abort", 15), ("backend_abort", 15)]
WHERE = [("plain", 45), ("tls", 45), ("alt", 10)]


def weighted(rng, table):
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


def worker(seed, ports, hellos, stats, stop, long_only):
    rng = random.Random(seed)
    while not stop.is_set():
        p = dict(ports)
        if long_only:
            where = rng.choice(["plain", "tls"])
            run_one(Client(p, hellos, stats, rng, stop), "long", where, stats,
                    20 + 2 * IO_TIMEOUT)
            continue
        kind = weighted(rng, MIX)
        where = weighted(rng, WHERE)
        if where == "alt":
            kind = "short"
            p["alt"] = ports["extra"] if rng.random() < 0.5 else ports["other"]
        run_one(Client(p, hellos, stats, rng, stop), kind, where, stats, 2 * IO_TIMEOUT)
        time.sleep(rng.uniform(0, 0.01))  # be a fair neighbour on a shared machine


# --- tpt probes ------------------------------------------------------------------------------

def proc_status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def open_fds(pid, kind=None):
    """Open descriptors of pid; kind "socket" or "pipe" counts only those."""
    if kind is None:
        return len(os.listdir(f"/proc/{pid}/fd"))
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(kind + ":")
        except OSError:
            pass  # closed meanwhile
    return n


def config_sha(admin):
    import json
    status, _, body = http_request(admin + "/config", timeout=5)
    return json.loads(body)["sha256"] if status == 200 else None


def sum_metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the run ---------------------------------------------------------------------------------

class Soak:
    """One soak run: tpt, its backends and baselines, the load, the control loop, the end
    checks and the figures; each step appends what it found wrong to `failures`."""

    def __init__(self, binary, workers, long_workers, env):
        self.failures = []
        self.workers, self.long_workers, self.env = workers, long_workers, env
        self.ports = {k: free_port() for k in ("admin", "plain", "tls", "extra", "other")}
        self.backends = {"back_a": Backend("back_a"), "back_b": Backend("back_b")}
        for name, b in self.backends.items():
            self.ports[name] = b.port
        workdir = Path(tempfile.mkdtemp(prefix="tpt-soak-"))
        self.generation = self.layout = 0
        self.proc = TptProcess(binary, config_text(0, self.ports, 0), env=env, workdir=workdir,
                               ready=True)
        self.pid = self.proc.popen.pid
        self.hellos = [client_hello(n) for n in ("a.soak.test", "x.soak.test", "y.z.soak.test",
                                                 "other.example", None)]
        self.stats = Stats()
        self.rss = []  # (seconds since start, bytes)
        self.fds_start = open_fds(self.pid)
        self.sockets_start = open_fds(self.pid, "socket")
        self.workers_of_tpt = len(os.sched_getaffinity(self.pid))
        self.rss_start = proc_status(self.pid, "VmRSS")
        self.fds_end = self.rss_end = self.pipes_end = 0
        self.reloads = self.forced = 0
        self.reload_latency = []
        self.turns = []  # seconds per turn of the control loop (about 1 s; more: it stalled)
        self.loaded = self.elapsed = 0.0

    def run_load(self, seconds):
        """The client threads for `seconds`, with the control loop's reloads meanwhile."""
        stop = threading.Event()
        threads = []
        started = time.monotonic()
        try:
            for i in range(self.workers + self.long_workers):
                t = threading.Thread(target=worker, args=(1000 + i, self.ports, self.hellos,
                                                          self.stats, stop, i >= self.workers),
                                     daemon=True)
                t.start()
                threads.append(t)
            self.control_loop(started, seconds)
        finally:
            self.loaded = time.monotonic() - started
            stop.set()
            for t in threads:
                t.join(3 * IO_TIMEOUT)
        self.elapsed = time.monotonic() - started
        stuck_threads = sum(t.is_alive() for t in threads)
        if stuck_threads:
            self.failures.append(f"{stuck_threads} client threads still running after the stop")

    def control_loop(self, started, seconds):
        """Every second a reload (every fifth by POST /reload); RSS sampled every 2 s."""
        next_sample = started
        tick = 0
        turn_start = time.monotonic()
        while time.monotonic() - started < seconds:
            self.turns.append(time.monotonic() - turn_start)
            turn_start = time.monotonic()
            if self.proc.popen.poll() is not None:
                self.failures.append(f"tpt exited with {self.proc.popen.returncode}")
                break
            now = time.monotonic()
            if now >= next_sample:
                self.rss.append((now - started, proc_status(self.pid, "VmRSS")))
                next_sample += 2.0
            tick += 1
            t0 = time.monotonic()
            if tick % 5 == 0:
                self.post_reload()
            else:
                self.replace_config()
            self.reload_latency.append(time.monotonic() - t0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    def post_reload(self):
        status, _, body = http_request(self.proc.admin + "/reload", "POST", timeout=10)
        if status != 200:
            self.failures.append(f"POST /reload answered {status}: {body[:200]!r}")
        self.forced += 1

    def replace_config(self):
        """The other layout, renamed over the config; waits until /config shows it live."""
        self.generation += 1
        self.layout ^= 1
        text = config_text(self.layout, self.ports, self.generation)
        tmp = self.proc.config_path.with_name(".tpt.yaml.tmp")
        tmp.write_text(text)
        os.rename(tmp, self.proc.config_path)
        want = hashlib.sha256(text.encode()).hexdigest()
        try:
            wait_until(lambda: config_sha(self.proc.admin) == want, 2.0,
                       f"reload {self.generation} live")
        except AssertionError as exc:
            self.failures.append(str(exc))
        self.reloads += 1

    def check_settled(self):
        """After the load: no active connection, descriptors back, the reload counters."""
        def settled():
            m = self.proc.metrics()
            return sum_metric(m, "tpt_active_connections") == 0 and m
        try:
            final_metrics = wait_until(settled, 15, "tpt_active_connections back to 0")
        except AssertionError as exc:
            self.failures.append(str(exc))
            final_metrics = self.proc.metrics()
        # Sockets come back to their start count; pipes are the relay's pool (splice), at
        # most max_pooled_pipes (32) per worker, two descriptors each.
        pipe_bound = 2 * 32 * self.workers_of_tpt
        try:
            wait_until(lambda: open_fds(self.pid, "socket") <= self.sockets_start, 15,
                       f"open sockets back to {self.sockets_start}")
        except AssertionError as exc:
            self.failures.append(f"{exc}: {open_fds(self.pid, 'socket')} open")
        self.pipes_end = open_fds(self.pid, "pipe")
        if self.pipes_end > pipe_bound:
            self.failures.append(f"{self.pipes_end} pipe descriptors open, the pool holds at "
                                 f"most {pipe_bound}")
        self.fds_end = open_fds(self.pid)
        self.rss_end = proc_status(self.pid, "VmRSS")
        ok = metric_value(final_metrics, "tpt_config_reloads_total", {"result": "success"}) or 0
        bad = metric_value(final_metrics, "tpt_config_reloads_total", {"result": "failure"}) or 0
        if ok != self.reloads + self.forced or bad != 0:
            self.failures.append(f"reload counters: success={ok} failure={bad}, expected "
                                 f"{self.reloads + self.forced} and 0")
        if http_get(self.proc.admin + "/healthz")[0] != 200:
            self.failures.append("/healthz is not 200 at the end")

    def stop(self, alive):
        """Stops tpt (exit 0 on SIGTERM) and the backends; checks tpt's log."""
        code = self.proc.stop(timeout=30)
        if alive and code != 0:
            self.failures.append(f"tpt exited {code} on SIGTERM")
        log = self.proc.log_text()
        for marker in SANITIZER_MARKERS:
            i = log.find(marker)
            if i >= 0:
                self.failures.append("sanitizer report in tpt's log:\n"
                                     + log[max(0, i - 200):i + 3000])
                break
        errors = [r for r in log_records(log) if r.get("level") in ("error", "critical")]
        if errors:
            self.failures.append(f"{len(errors)} error lines in tpt's log, first: {errors[0]}")
        for b in self.backends.values():
            b.close()

    def check_rss(self, alive, seconds):
        """RSS flat after warm-up: the last quarter's median within max(10 %, 4 MiB) of the
        second quarter's. Returns both medians."""
        def median_between(lo, hi):
            vals = [v for t, v in self.rss if lo * self.loaded <= t < hi * self.loaded]
            return statistics.median(vals) if vals else None
        q2, q4 = median_between(0.25, 0.5), median_between(0.75, 1.01)
        if (not q2 or not q4) and alive and seconds >= 20:
            self.failures.append(f"too few RSS samples: {self.rss}")
        if q2 and q4:
            allowed = max(0.10 * q2, 4 * MiB)
            if q4 - q2 > allowed:
                self.failures.append(f"RSS grew: second-quarter median {q2 / MiB:.1f} MiB, "
                                     f"last-quarter median {q4 / MiB:.1f} MiB (allowed "
                                     f"+{allowed / MiB:.1f} MiB)")
        return q2, q4

    def report(self, out, q2, q4):
        stats = self.stats
        if self.env:
            out("tpt environment: " + " ".join(f"{k}={v}" for k, v in self.env.items()))
        out(f"soak: {self.loaded:.0f} s under load ({self.elapsed:.0f} s with the drain), "
            f"{self.workers} short-tunnel workers + {self.long_workers} long")
        out(f"tunnels: {sum(stats.count.values())} "
            f"({', '.join(f'{k}={v}' for k, v in sorted(stats.count.items()))})")
        out(f"bytes: {stats.bytes_sent} sent, {stats.bytes_received} received by clients "
            f"({(stats.bytes_sent + stats.bytes_received) / MiB:.0f} MiB)")
        out(f"longest tunnel: {stats.max_duration:.1f} s")
        out(f"reloads: {self.reloads} by file rename + {self.forced} by POST /reload; worst "
            f"time to live {max(self.reload_latency, default=0):.2f} s")
        out(f"RSS: start {self.rss_start / MiB:.1f} MiB, end {self.rss_end / MiB:.1f} MiB, "
            f"peak {max((v for _, v in self.rss), default=0) / MiB:.1f} MiB, median Q2 "
            f"{(q2 or 0) / MiB:.1f} MiB, Q4 {(q4 or 0) / MiB:.1f} MiB")
        out(f"fds: start {self.fds_start} ({self.sockets_start} sockets), end {self.fds_end} "
            f"({self.pipes_end} pipes pooled)")
        out(f"control loop: longest turn {max(self.turns, default=0):.2f} s")
        out("backends accepted: " + ", ".join(f"{n}={b.accepted}"
                                              for n, b in self.backends.items()))
        if self.failures:
            out(f"FAILED: {len(self.failures)} problem(s)")
            for f in self.failures[:20]:
                out("  " + f)
        else:
            out("soak: PASSED")


def soak(binary, seconds, workers, long_workers, out=print, env=None):
    """The whole run; returns the problems found (none: passed) and prints the figures."""
    run = Soak(binary, workers, long_workers, env)
    run.run_load(seconds)
    alive = run.proc.popen.poll() is None
    if alive:
        run.check_settled()
    run.stop(alive)
    q2, q4 = run.check_rss(alive, seconds)
    run.failures += run.stats.failures
    run.report(out, q2, q4)
    return run.failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--tpt", default=os.environ.get("TPT_BIN",
                                                    str(REPO_ROOT / "build/release/tpt")))
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--long-workers", type=int, default=3)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for tpt (e.g. TPT_SPLICE=0); repeatable")
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    failures = soak(Path(args.tpt), args.seconds, args.workers, args.long_workers,
                    out=lambda s: print(s, flush=True), env=env)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
