"""Peers for the CONNECT tunnelling tests: a real squid started as a subprocess, a scripted
CONNECT proxy for the answers squid never gives, and a hand-built ClientHello whose SNI may be
any bytes. TLS servers and Python's own ClientHello come from tls_peers."""
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from helpers import free_port, wait_until

SQUID = "/usr/sbin/squid"
NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth"
SQUID_USER = "proxy"  # Debian's squid user; squid refuses to run as root without one
HEAD_LIMIT = 64 * 1024  # what the scripted proxy reads at most before giving up on a head


def read_until_closed(sock, timeout=5.0):
    """(bytes received, closed) reading sock until EOF/reset or the deadline."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return bytes(data), False
        except (ConnectionResetError, BrokenPipeError):
            return bytes(data), True
        if not chunk:
            return bytes(data), True
        data += chunk


def recv_exactly(sock, n, timeout=5.0):
    """n bytes from sock within the deadline, or an AssertionError with what arrived."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s with {bytes(data)!r} of {n} bytes")
        sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {bytes(data)!r} of {n} bytes")
        data += chunk
    return bytes(data)


# --- ClientHellos ---------------------------------------------------------------------------

def handmade_client_hello(sni_bytes):
    """A minimal TLS 1.2 ClientHello (RFC 5246 §7.4.1.2) in one record, with one server_name
    (RFC 6066 §3) whose host_name is `sni_bytes` verbatim: Python's ssl refuses names with
    spaces or CR/LF, which is what this builder is for."""
    def u8(n):
        return struct.pack("!B", n)

    def u16(n):
        return struct.pack("!H", n)

    def u24(n):
        return struct.pack("!I", n)[1:]

    server_name = u8(0) + u16(len(sni_bytes)) + sni_bytes           # host_name(0)
    sni_ext = u16(0) + u16(len(server_name) + 2) + u16(len(server_name)) + server_name
    groups = u16(0x001D) + u16(0x0017)                               # x25519, secp256r1
    groups_ext = u16(10) + u16(len(groups) + 2) + u16(len(groups)) + groups
    sigalgs = u16(0x0403) + u16(0x0804) + u16(0x0401)
    sigalgs_ext = u16(13) + u16(len(sigalgs) + 2) + u16(len(sigalgs)) + sigalgs
    extensions = sni_ext + groups_ext + sigalgs_ext
    suites = u16(0xC02F) + u16(0xC02B) + u16(0x009C)
    body = (u16(0x0303) + bytes(range(32)) + u8(0) + u16(len(suites)) + suites
            + u8(1) + u8(0) + u16(len(extensions)) + extensions)
    handshake = u8(1) + u24(len(body)) + body                        # client_hello(1)
    return u8(22) + u16(0x0301) + u16(len(handshake)) + handshake    # handshake(22) record


# --- squid ---------------------------------------------------------------------------------

class Squid:
    """A real squid on 127.0.0.1:<free port>, foreground (-N), in its own process group,
    requiring basic auth (basic_ncsa_auth over an htpasswd file written here), allowing
    CONNECT to any port for authenticated users, resolving `hosts` names from its own
    hosts_file, caching nothing, logging into its temp dir."""

    def __init__(self, users, hosts=(), start_timeout=30.0, run_as=SQUID_USER,
                 host_ip="127.0.0.1", port=None, extra_conf=""):
        """run_as: the user squid drops to; host_ip: where `hosts` names resolve; port: a
        given one (a restart on the same port); extra_conf: lines appended."""
        self.dir = Path(tempfile.mkdtemp(prefix="tpt-squid-"))
        os.chmod(self.dir, 0o755)
        self.port = port or free_port()
        self.access_log = self.dir / "access.log"
        self.cache_log = self.dir / "cache.log"
        passwd = self.dir / "passwd"
        self.passwd = passwd
        self.set_users(users)
        hosts_file = self.dir / "hosts"
        hosts_file.write_text("".join(f"{host_ip} {name}\n" for name in hosts) or
                              "127.0.0.1 localhost\n")
        d = self.dir
        as_root = os.geteuid() == 0
        self.conf = d / "squid.conf"
        self.conf.write_text(f"""\
http_port 127.0.0.1:{self.port}
pid_filename {d}/squid.pid
{f"cache_effective_user {run_as}" if as_root else "# not root: squid runs as us"}
cache deny all
cache_mem 8 MB
access_log stdio:{self.access_log}
cache_log {self.cache_log}
cache_store_log none
coredump_dir {d}
netdb_filename none
pinger_enable off
hosts_file {hosts_file}
# Names come from hosts_file only: never send a query to the machine's DNS server.
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
auth_param basic program {NCSA_AUTH} {passwd}
auth_param basic realm tpt-e2e
auth_param basic children 2
acl CONNECT method CONNECT
acl authenticated proxy_auth REQUIRED
http_access allow CONNECT authenticated
http_access deny all
{extra_conf}""")
        if as_root:  # squid refuses to run as root: it drops to SQUID_USER, who owns the dir
            entry = pwd.getpwnam(run_as)
            for p in [d, *d.iterdir()]:
                os.chown(p, entry.pw_uid, entry.pw_gid)
        self.out = open(d / "squid.out", "wb")
        self.popen = subprocess.Popen([SQUID, "-N", "-f", str(self.conf)], stdout=self.out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._listening, start_timeout, f"squid listening on {self.port}")
        except AssertionError:
            self.stop()
            raise

    def set_users(self, users):
        """Rewrites the htpasswd file (basic_ncsa_auth reads it again when it changes)."""
        lines = []
        for user, password in users.items():
            digest = subprocess.run(["openssl", "passwd", "-apr1", password], check=True,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
            lines.append(f"{user}:{digest}\n")
        tmp = self.passwd.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.chmod(tmp, 0o644)
        if self.passwd.exists():  # the helper compares whole seconds of mtime
            later = max(int(time.time()), int(self.passwd.stat().st_mtime) + 1)
            os.utime(tmp, (later, later))
        os.replace(tmp, self.passwd)

    def _listening(self):
        if self.popen.poll() is not None:
            raise AssertionError(f"squid exited with {self.popen.returncode}:\n{self.log_text()}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
            return True

    def log_text(self):
        parts = []
        for p in (self.dir / "squid.out", self.cache_log):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    # The squid fixture is shared by a module: its access log holds the tunnels of earlier
    # tests, whose targets' ports the kernel may since have given to this test's servers. A
    # test reads only what follows a mark it took before its first tunnel.

    def wait_idle(self, timeout=10.0):
        """Until no client connection to squid is open, so every tunnel so far is logged:
        squid writes a tunnel's line as it tears the tunnel down, before it closes the
        client's socket (comm_close runs the close handlers first)."""
        wait_until(lambda: not self._open_client_connections(), timeout,
                   "every client connection to squid closed")

    def log_mark(self, timeout=10.0):
        """The access log's length once every earlier tunnel has ended: no line of an
        earlier test can come after it."""
        self.wait_idle(timeout)
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def log_since(self, mark):
        """The access-log lines written after log_mark() returned mark."""
        if not self.access_log.exists():
            return []
        with open(self.access_log, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace").splitlines()

    def wait_access(self, needle, since, timeout=10.0):
        """The first access-log line after the mark `since` containing needle."""
        def find():
            return next((line for line in self.log_since(since) if needle in line), None)
        return wait_until(find, timeout, f"squid access line with {needle!r}")

    def _open_client_connections(self):
        """Connections to squid's port whose squid end is not closed yet (proc(5),
        /proc/net/tcp: ESTABLISHED, SYN_RECV or CLOSE_WAIT)."""
        loopback = struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0]  # host byte order
        local = f"{loopback:08X}:{self.port:04X}"
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return [r for r in rows
                if r.split()[1] == local and r.split()[3] in ("01", "03", "08")]

    def _children(self):
        """Pids of squid's children (its auth helpers), which run in sessions of their own."""
        pids = set()
        for task in Path(f"/proc/{self.popen.pid}/task").glob("*/children"):
            try:
                pids.update(int(p) for p in task.read_text().split())
            except OSError:
                pass
        return pids

    def stop(self):
        helpers = self._children() if self.popen.poll() is None else set()
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.popen.returncode is None:
            self.popen.wait(5)
        # Helpers normally exit on their stdin's EOF; kill any that did not, by pid.
        for pid in helpers:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(NCSA_AUTH.encode()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- scripted CONNECT proxy ----------------------------------------------------------------

OK_HEAD = b"HTTP/1.1 200 Connection established\r\n\r\n"


class ScriptedProxy:
    """A CONNECT proxy on 127.0.0.1 that reads the request head and then follows `mode`:

    ok              answer OK_HEAD in one write, then echo the tunnel
    byte_by_byte    answer OK_HEAD one byte per write (TCP_NODELAY, paced), then echo; with
                    `early_with_last_byte`, `early` goes in the same write as the last byte
    head_with_data  answer OK_HEAD + `early` in a single write, then echo
    status:NNN      answer `HTTP/1.1 NNN ...` and keep the connection open
    silent          never answer, keep the connection open
    garbage         answer bytes that are not HTTP but contain CRLFCRLF, keep it open
    garbage_close   answer binary garbage and close
    raw             answer `answer` in one write, then `then`: "tunnel" (echo), "hold" (keep
                    it open, echo nothing) or "half_close" (FIN at once, keep reading)

    Records every connection: `requests` (the head bytes up to CRLFCRLF), `received`
    (everything the peer sent, head included, updated as it arrives) and, in byte_by_byte,
    `premature`: tunnel bytes that arrived before the answer was complete (a client must
    wait for the 2xx before sending tunnel data)."""

    def __init__(self, mode="ok", early=b"EARLY-TUNNEL-BYTES", byte_interval=0.005,
                 answer=b"", then="tunnel", early_with_last_byte=False):
        self.mode = mode
        self.early_with_last_byte = early_with_last_byte
        self.answer = answer
        self.then = then
        self.premature = []
        self.premature_by_conn = {}
        self.early = early
        self.byte_interval = byte_interval
        self.lock = threading.Lock()
        self.requests = []
        self.received = []
        self.conns = []
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def connections(self):
        with self.lock:
            return len(self.received)

    def all_received(self):
        with self.lock:
            return [bytes(r) for r in self.received]

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                index = len(self.received)
                self.received.append(bytearray())
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _recv(self, conn, index):
        data = conn.recv(65536)
        with self.lock:
            self.received[index] += data
        return data

    def _serve(self, conn, index):
        conn.settimeout(30)
        try:
            buf = bytearray()
            while b"\r\n\r\n" not in buf and len(buf) < HEAD_LIMIT:
                data = self._recv(conn, index)
                if not data:
                    return
                buf += data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            with self.lock:
                self.requests.append(bytes(buf[:end + 4]))
            tunnel = bytes(buf[end + 4:])
            after = self._answer(conn, index)
            if after == "half_close":
                conn.shutdown(socket.SHUT_WR)
            if after != "tunnel":
                self._hold(conn, index)
                return
            with self.lock:
                tunnel += self.premature_by_conn.get(index, b"")
            if tunnel:
                conn.sendall(tunnel)
            while True:
                data = self._recv(conn, index)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn, index):
        """Sends the answer; returns what follows: "tunnel", "hold" or "half_close"."""
        mode = self.mode
        if mode == "ok":
            conn.sendall(OK_HEAD)
            return "tunnel"
        if mode == "byte_by_byte":
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            premature = bytearray()
            for i, b in enumerate(OK_HEAD):
                if i:
                    # Pacing, not synchronisation: each byte leaves in its own segment, and
                    # whatever the peer sends before the last byte is caught as premature.
                    readable, _, _ = select.select([conn], [], [], self.byte_interval)
                    if readable:
                        data = self._recv(conn, index)
                        if not data:
                            break
                        premature += data
                last = i == len(OK_HEAD) - 1
                conn.sendall(bytes([b]) + (self.early if last and self.early_with_last_byte
                                           else b""))
            with self.lock:
                self.premature.append(bytes(premature))
                self.premature_by_conn[index] = bytes(premature)
            return "tunnel"
        if mode == "head_with_data":
            conn.sendall(OK_HEAD + self.early)
            return "tunnel"
        if mode.startswith("status:"):
            code = int(mode.split(":", 1)[1])
            conn.sendall(f"HTTP/1.1 {code} Scripted Refusal\r\nContent-Length: 0\r\n\r\n"
                         .encode())
            return "hold"
        if mode == "silent":
            return "hold"
        if mode == "garbage":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 not-http\r\n\r\n")
            return "hold"
        if mode == "raw":
            conn.sendall(self.answer)
            return self.then
        if mode == "garbage_close":
            conn.sendall(bytes(range(256)) * 4)
            conn.shutdown(socket.SHUT_RDWR)
            return "hold"
        raise ValueError(f"unknown mode {mode}")

    def _hold(self, conn, index):
        """Keeps the connection open, recording what arrives, until the peer closes."""
        while not self.stopping.is_set():
            try:
                data = self._recv(conn, index)
            except OSError:
                return
            if not data:
                return

    def stop(self):
        self.stopping.set()
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
