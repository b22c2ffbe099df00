"""Shared helpers for the black-box tests: ports, polling with deadlines, tiny HTTP client."""
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
TEST_PORT_FLOOR = 20000  # the lowest port handed out; below it live well-known services
GOLDEN = 0.6180339887  # spreads the start points of runs whose pids are close together


def _test_port_range():
    """(low, high) of the ports free_port() hands out: outside the kernel's ephemeral range,
    from TEST_PORT_FLOOR up to just below it (20000-32767 with Linux's default 32768-60999),
    or above it when there is no room below."""
    try:
        low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - TEST_PORT_FLOOR >= 1000:
        return TEST_PORT_FLOOR, low - 1
    if 65535 - high >= 1000:
        return high + 1, 65535
    raise RuntimeError(f"the ephemeral port range {low}-{high} leaves no room for test ports")


class _PortAllocator:
    """Hands out each port of the test range at most once per lap, starting at an offset
    derived from the pid (so that two pytest runs at once start far apart), skipping any port
    that cannot be bound right now (another run's tpt, a service, a TIME_WAIT)."""

    def __init__(self):
        self.low, self.high = _test_port_range()
        self.span = self.high - self.low + 1
        self._next = int(os.getpid() * GOLDEN * self.span) % self.span
        self._lock = threading.Lock()

    def take(self, host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self._lock:
            for _ in range(self.span):
                port = self.low + self._next
                self._next = (self._next + 1) % self.span
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    try:
                        s.bind((host, port))
                    except OSError:
                        continue
                return port
        raise AssertionError(f"no bindable port on {host} in {self.low}-{self.high}")


_ports = _PortAllocator()


def free_port(host="127.0.0.1"):
    """A TCP port on host for ANOTHER process to listen on (tpt, squid, Prometheus), or for
    nothing to listen on (a refused upstream).

    Not bind(0)-and-close: that port comes from the kernel's ephemeral range
    (ip_local_port_range), which every outgoing connection on the machine draws from too, so
    it may be taken again before the other process binds it (EADDRINUSE), and a connect to a
    "dead" port there may even connect to itself. The ports here lie outside that range, where
    the kernel never hands one out on its own; each is given out once per run (see
    _PortAllocator) and was bindable when given. A server the test itself starts binds port 0
    and reads the port it got instead: that is race-free."""
    return _ports.take(host)


def wait_until(predicate, timeout=10.0, what="condition", interval=0.02):
    """Poll predicate until it returns a truthy value; raise naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polled probes may fail until ready
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def http_request(url, method="GET", body=None, headers=None, timeout=5.0):
    """Returns (status, headers dict lower-cased, body bytes)."""
    m = re.match(r"http://([^/:]+|\[[^\]]+\]):(\d+)(/.*)?$", url)
    assert m, url
    host = m.group(1).strip("[]")
    conn = http.client.HTTPConnection(host, int(m.group(2)), timeout=timeout)
    try:
        conn.request(method, m.group(3) or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def http_get(url, timeout=5.0):
    return http_request(url, "GET", timeout=timeout)


def metric_value(metrics_text, name, labels=None):
    """The value of one sample of the Prometheus text, or None. labels: dict subset to match."""
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    return None


class TptProcess:
    """A running tpt binary with its config file and captured stderr log."""

    def __init__(self, binary, config_text, env=None, args=None, workdir=None, ready=True,
                 config_name="tpt.yaml", prefix=()):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="tpt-e2e-"))
        self.config_path = self.dir / config_name
        self.config_path.write_text(config_text)
        self.log_path = self.dir / "tpt.log"
        self._log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TPT_")}
        full_env.update(env or {})
        # prefix: a command tpt runs under, e.g. setpriv to run it as another user.
        cmd = [*prefix, str(binary), "-c", str(self.config_path)] + list(args or [])
        self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=full_env, cwd=self.dir)
        self.admin = None
        m = re.search(r'^\s*listen:\s*"?([0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)"?\s*$',
                      _admin_block(config_text), re.M)
        if m:
            host = m.group(1)
            if host in ("0.0.0.0", "[::]"):
                host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
            self.admin = f"http://{host}:{m.group(2)}"
        if ready and self.admin:
            self.wait_ready()

    def wait_ready(self, timeout=15.0):
        def ok():
            if self.popen.poll() is not None:
                raise AssertionError(f"tpt exited with {self.popen.returncode}:\n{self.log_text()}")
            return http_get(self.admin + "/ready", timeout=1.0)[0] == 200
        wait_until(ok, timeout, "tpt /ready")

    def log_text(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log_text()), timeout, f"log line /{pattern}/")

    def metrics(self):
        status, _, body = http_get(self.admin + "/metrics")
        assert status == 200
        return body.decode()

    def signal(self, sig=signal.SIGTERM):
        self.popen.send_signal(sig)

    def stop(self, timeout=10.0):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def end_holder(holder, timeout=10.0):
    """Ends a namespace holder (a process that reads its stdin until EOF): closes its stdin,
    then kills it if it has not exited within `timeout`."""
    holder.stdin.close()
    try:
        holder.wait(timeout)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait(timeout)


def _admin_block(config_text):
    m = re.search(r"^admin:\s*\n((?:[ \t]+.*\n?)*)", config_text, re.M)
    return m.group(1) if m else ""


# --- tpt's own log lines (SPEC §5), txt or json -------------------------------------------

_TXT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (\w+) (.*)$")
_TXT_FIELD = re.compile(r' ([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)(?=\s|$)')


def _txt_unquote(value):
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_log_line(line):
    """One line of tpt's log as a dict (ts, level, msg and the fields, values as written),
    or None for a line that is neither tpt's txt format nor a JSON object. txt lines are
    `TS LEVEL msg key=value key="quoted value"`; the message is what precedes the first
    ` key=` field."""
    import json

    line = line.rstrip("\r\n")
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    m = _TXT_LINE.match(line)
    if not m:
        return None
    rest = " " + m.group(3)
    first = _TXT_FIELD.search(rest)
    msg_end = first.start() if first else len(rest)
    record = {"ts": m.group(1), "level": m.group(2), "msg": rest[1:msg_end]}
    for fm in _TXT_FIELD.finditer(rest, msg_end):
        record[fm.group(1)] = _txt_unquote(fm.group(2))
    return record


def log_records(text):
    """Every parseable line of a tpt log text, in order."""
    return [r for r in map(parse_log_line, text.splitlines()) if r is not None]


def access_records(proc):
    """The access-log records (msg "access") tpt has written so far."""
    return [r for r in log_records(proc.log_text()) if r.get("msg") == "access"]


def wait_access(proc, predicate=lambda r: True, count=1, timeout=10.0):
    """The access records matching predicate once there are at least `count` of them."""
    def found():
        matching = [r for r in access_records(proc) if predicate(r)]
        return matching if len(matching) >= count else None
    return wait_until(found, timeout, f"{count} matching access line(s) in tpt's log")


def capture_skip_reason():
    """Why the netfilter tests (SPEC §11) cannot run here, or None: they need root, the
    namespace tools and a kernel with nftables NAT/REDIRECT."""
    if os.geteuid() != 0:
        return "needs root: network namespaces and netfilter rules"
    for tool in ("unshare", "nsenter", "setpriv", "nft", "ip", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/deps.sh test installs it)"
    probe = subprocess.run(["unshare", "-n", "nft", "-f", "-"], input=(
        "table ip tpt_probe { chain o { type nat hook output priority -100; "
        "tcp dport 1 redirect to :2; }; }\n"), capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"this kernel has no nftables NAT/REDIRECT: {probe.stderr.strip()}"
    return None


class EchoUpstream:
    """A TCP upstream on loopback that sends back every byte it receives, counting the
    connections it accepted (count())."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn):
        while True:
            try:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    break
                conn.sendall(data)
            except OSError:
                break
        with self.lock:  # both directions are over: free the descriptor now
            self.conns.remove(conn)
        conn.close()

    def count(self):
        with self.lock:
            return self.accepted

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.acceptor.join(5)
        with self.lock:
            for c in self.conns:
                c.close()
