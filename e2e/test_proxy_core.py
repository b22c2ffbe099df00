"""The proxy core, black-box (SPEC §4, §5): real TLS clients (Python ssl, openssl s_client,
curl) through tpt to real TLS servers that record the SNI they saw; exact, wildcard and
default routes; the built-ins ban/echo/health; maxclients; 50 MB each way at once; half-close;
a refused upstream; garbage and silent clients; ClientHellos split into single bytes and
larger than one MTU; IPv6; idle_timeout; the access log in txt and json."""
import concurrent.futures
import hashlib
import json
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import (REPO_ROOT, access_records, free_port, http_get, log_records, metric_value,
                     wait_access, wait_until)
from tls_peers import (Pki, TcpServer, TlsServer, client_hello, echo_handler, recv_all,
                       record_then_reply, sink_and_source)

HELLO_DIR = REPO_ROOT / "tests" / "data" / "hello"
ACCESS_FIELDS = ("server", "listen", "client", "sni", "route", "upstream", "connect_target",
                 "original_dst", "bytes_to_upstream", "bytes_to_client", "duration_ms", "result")
CLOSE_WITHIN = 3.0  # "closed at once": generous for a loaded CI machine, far below any timeout
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

# Every name a client asks for in the routing tests; the test certificate covers them all,
# so the clients verify the upstream's certificate and host name for real.
ROUTER_SNI = {
    "a.example.com": "up_a",
    "exact.example.org": "up_exact",
    "*.example.org": "up_wild",
    "*.b.example.org": "up_bwild",
    "ban.example.com": "ban",
    "echo.example.com": "echo",
}
CERT_NAMES = ["a.example.com", "exact.example.org", "a.example.org", "x.y.example.org",
              "b.example.org", "a.b.example.org", "c.d.b.example.org", "example.org",
              "other.example.net", "large.example.com", "v6.example.com", "log.example.org"]


# --- fixtures and small tools ---------------------------------------------------------------

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


class Peers:
    """Factory of upstream peers; every one is closed at teardown."""

    def __init__(self, pki):
        self.pki = pki
        self.made = []

    def tls(self, name, host="127.0.0.1"):
        s = TlsServer(self.pki, name, CERT_NAMES, host=host)
        self.made.append(s)
        return s

    def tcp(self, handler, host="127.0.0.1"):
        s = TcpServer(handler, host=host)
        self.made.append(s)
        return s

    def close(self):
        for s in self.made:
            s.close()


@pytest.fixture
def peers(pki):
    p = Peers(pki)
    yield p
    p.close()


def config_text(servers, upstream=None, log_format=None, log="info"):
    doc = {"version": 2, "log": log}
    if log_format:
        doc["log_format"] = log_format
    doc["admin"] = {"listen": f"127.0.0.1:{free_port()}"}
    doc["servers"] = servers
    if upstream:
        doc["upstream"] = upstream
    return yaml.safe_dump(doc, sort_keys=False)


def url(peer, scheme="tcp"):
    return f"{scheme}://{peer.address}"


def connect(port, host="127.0.0.1", timeout=10.0, nodelay=False):
    s = socket.create_connection((host, port), timeout=timeout)
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def assert_closed_without_bytes(sock, within=CLOSE_WITHIN):
    """The peer closes sock within `within` seconds and sends nothing first.
    Returns the seconds it took."""
    start = time.monotonic()
    sock.settimeout(within)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        pytest.fail(f"connection still open after {within}s")
    assert data == b"", f"expected no bytes before the close, got {data[:64]!r}"
    return time.monotonic() - start


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def https_get(port, sni, pki, host="127.0.0.1"):
    """A verifying Python TLS client through tpt: GET / and return (body, TLS version)."""
    ctx = pki.client_context(check_hostname=sni is not None)
    if sni is None:
        ctx.verify_mode = ssl.CERT_REQUIRED  # still verify the chain, just no host name
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = recv_all(tls)
            version = tls.version()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response[:200]
    return body.decode(), version


def metric(proc, name, labels=None):
    return metric_value(proc.metrics(), name, labels)


def wait_metric(proc, name, labels, expected, timeout=10.0):
    wait_until(lambda: metric(proc, name, labels) == expected, timeout,
               f"{name}{labels} == {expected}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def peak_rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/pid/status")


# --- routing with real TLS clients and servers ----------------------------------------------

@pytest.fixture
def router(tpt, peers):
    """tpt with one tls:true server routing ROUTER_SNI to named TLS servers, default up_default.
    Returns (proc, port, {upstream name: TlsServer})."""
    ups = {name: peers.tls(name) for name in ("up_a", "up_exact", "up_wild", "up_bwild",
                                                  "up_default")}
    port = free_port()
    servers = {"router": {"listen": [f"127.0.0.1:{port}"], "tls": True, "sni": ROUTER_SNI,
                          "default": "up_default", "client_hello_timeout": "5s"}}
    proc = tpt(config_text(servers, {n: url(s) for n, s in ups.items()}))
    return proc, port, ups


# (SNI the client sends, upstream expected). Upper case routes like lower case; exact beats
# wildcard; the longest wildcard wins; a wildcard never matches its own apex.
ROUTING_CASES = [
    ("a.example.com", "up_a"),
    ("A.EXAMPLE.COM", "up_a"),
    ("A.Example.Com", "up_a"),
    ("exact.example.org", "up_exact"),
    ("EXACT.Example.ORG", "up_exact"),
    ("a.example.org", "up_wild"),
    ("x.y.example.org", "up_wild"),
    ("A.Example.Org", "up_wild"),
    ("b.example.org", "up_wild"),
    ("a.b.example.org", "up_bwild"),
    ("c.d.b.example.org", "up_bwild"),
    ("C.D.B.EXAMPLE.ORG", "up_bwild"),
    ("example.org", "up_default"),
    ("other.example.net", "up_default"),
    (None, "up_default"),
]


def test_python_ssl_client_routes_by_sni_and_upstream_sees_it(router, pki):
    proc, port, ups = router
    for sni, expected in ROUTING_CASES:
        before = {n: len(s.snis) for n, s in ups.items()}
        body, version = https_get(port, sni, pki)
        assert body == f"upstream={expected} sni={sni}", f"SNI {sni!r}"
        assert version in ("TLSv1.2", "TLSv1.3"), version
        # Exactly one upstream handshake, on the expected server, with the client's SNI
        # byte for byte (tpt forwards the hello unchanged, case included).
        grown = {n for n, s in ups.items() if len(s.snis) != before[n]}
        assert grown == {expected}, f"SNI {sni!r} reached {grown}"
        assert ups[expected].snis[-1] == sni, f"SNI {sni!r}"
    records = wait_access(proc, count=len(ROUTING_CASES))
    assert [r["result"] for r in records] == ["ok"] * len(ROUTING_CASES)
    route_of = {r["route"] for r in records}
    assert route_of == {"a.example.com", "exact.example.org", "*.example.org",
                        "*.b.example.org", "default"}


@pytest.mark.parametrize("sni,expected,extra", [
    ("a.b.example.org", "up_bwild", []),
    ("A.B.EXAMPLE.ORG", "up_bwild", []),
    ("exact.example.org", "up_exact", ["-tls1_2"]),
    ("other.example.net", "up_default", ["-tls1_3"]),
    # About 6 KiB of ALPN names, cut by OpenSSL into records of at most 512 bytes: a hello
    # much larger than one MTU, spanning many records and TCP segments.
    ("large.example.com", "up_default",
     ["-alpn", ",".join(f"{'p' * 200}{i:02d}" for i in range(28)), "-max_send_frag", "512"]),
])
def test_openssl_s_client_through_tpt(router, pki, sni, expected, extra):
    proc, port, ups = router
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni,
           "-CAfile", str(pki.ca_cert), "-verify_return_error", "-verify_hostname", sni,
           "-brief", "-ign_eof"] + extra
    out = subprocess.run(cmd, input=b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", capture_output=True,
                         timeout=20)
    stderr = out.stderr.decode(errors="replace")
    assert out.returncode == 0, stderr
    assert "Verification: OK" in stderr, stderr
    assert f"upstream={expected} sni={sni}".encode() in out.stdout, out.stdout[-500:]
    assert ups[expected].snis == [sni]
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok" and rec["sni"].lower() == sni.lower()


@pytest.mark.parametrize("host,expected", [
    ("a.example.org", "up_wild"),
    ("c.d.b.example.org", "up_bwild"),
    ("a.example.com", "up_a"),
])
def test_curl_against_https_server_through_tpt(router, pki, host, expected):
    proc, port, ups = router
    cmd = ["curl", "-sS", "--fail", "--max-time", "20", "--cacert", str(pki.ca_cert),
           "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"]
    out = subprocess.run(cmd, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout.decode() == f"upstream={expected} sni={host}"
    assert ups[expected].snis == [host]


# --- built-in upstreams ---------------------------------------------------------------------

def test_builtins_ban_echo_health(tpt):
    ban_port, echo_port, health_port, tls_port = (free_port() for _ in range(4))
    servers = {
        "banned": {"listen": [f"127.0.0.1:{ban_port}"], "default": "ban"},
        "echoer": {"listen": [f"127.0.0.1:{echo_port}"], "default": "echo"},
        "healthy": {"listen": [f"127.0.0.1:{health_port}"], "default": "health"},
        "sniffer": {"listen": [f"127.0.0.1:{tls_port}"], "tls": True, "default": "ban",
                    "sni": {"ban.example.com": "ban", "echo.example.com": "echo"}},
    }
    proc = tpt(config_text(servers))

    # ban: closed at once, nothing sent, with or without a hello.
    with connect(ban_port) as s:
        assert_closed_without_bytes(s)
    with connect(tls_port) as s:
        s.sendall(client_hello("ban.example.com"))
        assert_closed_without_bytes(s)
    with connect(tls_port) as s:
        s.sendall(client_hello("not-listed.example.com"))  # default: ban
        assert_closed_without_bytes(s)

    # echo: every byte reflected, in order, with a FIN answered by a FIN.
    payload = os.urandom(256 * 1024)
    with connect(echo_port) as s:
        sender = threading.Thread(target=lambda: (s.sendall(payload),
                                                  s.shutdown(socket.SHUT_WR)))
        sender.start()
        got = recv_all(s)
        sender.join(10)
    assert got == payload
    hello = client_hello("echo.example.com")
    with connect(tls_port) as s:
        s.sendall(hello + b"after the hello")
        assert recv_exactly(s, len(hello) + 15) == hello + b"after the hello"

    # health: the admin handler on that listener, keep-alive included.
    status, _, body = http_get(f"http://127.0.0.1:{health_port}/health")
    assert (status, body) == (200, b"OK")
    with connect(health_port) as s:
        for _ in range(2):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            rest = head.partition(b"\r\n\r\n")[2]
            rest += recv_exactly(s, length - len(rest)) if length > len(rest) else b""
            assert rest == b"OK"

    records = wait_access(proc, lambda r: r["upstream"] in ("ban", "echo"), count=5)
    bans = [r for r in records if r["upstream"] == "ban"]
    assert len(bans) == 3 and all(r["result"] == "ban" for r in bans)
    assert all(r["bytes_to_client"] == "0" for r in bans)
    echo = next(r for r in records if r["server"] == "echoer")
    assert echo["bytes_to_client"] == str(len(payload)) and echo["result"] == "ok"


# --- maxclients -----------------------------------------------------------------------------

def test_maxclients_rejects_the_extra_connection_and_health_still_answers(tpt, peers):
    echo = peers.tcp(echo_handler)
    port, health_port = free_port(), free_port()
    servers = {
        "limited": {"listen": [f"127.0.0.1:{port}"], "maxclients": 3, "default": "up"},
        # Health servers are exempt from maxclients (SPEC §4.1): 1 here, yet 3 at once work.
        "healthy": {"listen": [f"127.0.0.1:{health_port}"], "maxclients": 1,
                    "default": "health"},
    }
    proc = tpt(config_text(servers, {"up": url(echo)}))
    assert metric(proc, "tpt_maxclients", {"name": "limited"}) == 3

    held = []
    try:
        for i in range(3):
            s = connect(port)
            held.append(s)
            s.sendall(b"ping %d" % i)
            assert recv_exactly(s, 6) == b"ping %d" % i  # the tunnel is open end to end
        wait_metric(proc, "tpt_active_connections", {"name": "limited"}, 3)

        with connect(port) as extra:
            assert_closed_without_bytes(extra)
        wait_metric(proc, "tpt_maxclients_rejected_total", {"name": "limited"}, 1)
        assert echo.accepted == 3, "the rejected connection must not reach the upstream"

        health_conns = [connect(health_port) for _ in range(3)]
        try:
            for h in health_conns:
                h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for h in health_conns:
                answer = recv_all(h)
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"OK"), answer
        finally:
            for h in health_conns:
                h.close()

        # The held tunnels are untouched by the rejection.
        for i, s in enumerate(held):
            s.sendall(b"pong %d" % i)
            assert recv_exactly(s, 6) == b"pong %d" % i

        # A slot freed is a slot usable again.
        held.pop().close()

        def a_new_client_is_served():
            with connect(port, timeout=3) as s:
                s.sendall(b"again")
                s.settimeout(3)
                return s.recv(5) == b"again"
        wait_until(a_new_client_is_served, 10, "a client served after a slot freed")
    finally:
        for s in held:
            s.close()
    assert metric(proc, "tpt_maxclients_rejected_total", {"name": "healthy"}) in (None, 0)


# --- volume, half-close ---------------------------------------------------------------------

@pytest.mark.no_sanitizer
def test_50_mb_each_way_at_once_arrives_intact(tpt, peers):
    size = 50 * 1024 * 1024
    to_upstream = os.urandom(size)
    to_client = os.urandom(size)
    upstream = peers.tcp(sink_and_source(to_client))
    port = free_port()
    proc = tpt(config_text({"plain": {"listen": [f"127.0.0.1:{port}"], "default": "up"}},
                           {"up": url(upstream)}))
    rss_before = peak_rss_bytes(proc.popen.pid)

    with connect(port, timeout=60) as s:
        errors = []

        def send():
            try:
                s.sendall(to_upstream)
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        digest = hashlib.sha256()
        received = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
        sender.join(60)
        assert not sender.is_alive() and not errors, errors

    assert received == size
    assert digest.hexdigest() == hashlib.sha256(to_client).hexdigest()
    wait_until(lambda: upstream.result_count() == 1, 30, "the upstream's verdict")
    assert not upstream.errors, upstream.errors
    assert upstream.results[0] == {"received": size,
                                   "sha256": hashlib.sha256(to_upstream).hexdigest()}
    (rec,) = wait_access(proc)
    assert (rec["bytes_to_upstream"], rec["bytes_to_client"], rec["result"]) == \
        (str(size), str(size), "ok")
    # Backpressure (SPEC §4.7): 100 MB went through, nowhere near that was ever resident.
    grown = peak_rss_bytes(proc.popen.pid) - rss_before
    assert grown < 32 * 1024 * 1024, f"peak RSS grew by {grown} bytes"


def test_half_close_client_still_reads_the_whole_answer(tpt, peers):
    answer = os.urandom(1024 * 1024)
    plain_up = peers.tcp(record_then_reply(answer))
    tls_up = peers.tcp(record_then_reply(b"seen your hello"))

    def banner_then_record(conn):
        conn.sendall(b"banner first")
        conn.shutdown(socket.SHUT_WR)
        return recv_all(conn)
    banner_up = peers.tcp(banner_then_record)

    plain_port, tls_port, banner_port = free_port(), free_port(), free_port()
    servers = {
        "plain": {"listen": [f"127.0.0.1:{plain_port}"], "default": "plain_up"},
        "sniffed": {"listen": [f"127.0.0.1:{tls_port}"], "tls": True, "default": "ban",
                    "sni": {"half.example.com": "tls_up"}},
        "banner": {"listen": [f"127.0.0.1:{banner_port}"], "default": "banner_up"},
    }
    proc = tpt(config_text(servers, {"plain_up": url(plain_up), "tls_up": url(tls_up),
                                     "banner_up": url(banner_up)}))

    # The client's FIN reaches the upstream, which answers only then; the answer flows back.
    with connect(plain_port) as s:
        s.sendall(b"question")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == answer
    # The same right after a ClientHello: the FIN is passed on once the route is chosen.
    hello = client_hello("half.example.com")
    with connect(tls_port) as s:
        s.sendall(hello)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"seen your hello"
    # The other way round: the upstream's FIN first, the client keeps sending afterwards.
    with connect(banner_port) as s:
        assert recv_all(s) == b"banner first"
        s.sendall(b"written after the upstream's FIN")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        assert s.recv(1) == b""

    wait_until(lambda: plain_up.result_count() == 1 and tls_up.result_count() == 1
               and banner_up.result_count() == 1, 10, "the upstreams' records")
    assert plain_up.results == [b"question"]
    assert tls_up.results == [hello]
    assert banner_up.results == [b"written after the upstream's FIN"]
    records = wait_access(proc, count=3)
    by_server = {r["server"]: r for r in records}
    assert by_server["plain"]["bytes_to_client"] == str(len(answer))
    assert by_server["sniffed"]["bytes_to_upstream"] == str(len(hello))
    assert all(r["result"] == "ok" for r in records), records


# --- errors ---------------------------------------------------------------------------------

def test_refused_upstream_closes_client_and_is_logged_and_counted(tpt):
    dead = free_port()  # nothing listens there
    plain_port, tls_port = free_port(), free_port()
    servers = {
        "refuser": {"listen": [f"127.0.0.1:{plain_port}"], "default": "dead"},
        "refuser_tls": {"listen": [f"127.0.0.1:{tls_port}"], "tls": True, "default": "ban",
                        "sni": {"refused.example.com": "dead"}},
    }
    proc = tpt(config_text(servers, {"dead": f"tcp://127.0.0.1:{dead}"}))

    with connect(plain_port) as s:
        assert_closed_without_bytes(s)
    with connect(tls_port) as s:
        s.sendall(client_hello("refused.example.com"))
        assert_closed_without_bytes(s)

    records = wait_access(proc, count=2)
    by_server = {r["server"]: r for r in records}
    assert by_server["refuser"]["result"] == "connect_refused"
    assert by_server["refuser"]["route"] == "default"
    assert by_server["refuser_tls"]["result"] == "connect_refused"
    assert by_server["refuser_tls"]["route"] == "refused.example.com"
    assert all(r["upstream"] == "dead" and r["bytes_to_client"] == "0" for r in records)
    text = proc.metrics()
    assert metric_value(text, "tpt_route_errors_total",
                        {"server": "refuser", "route": "default",
                         "reason": "connect_refused"}) == 1
    assert metric_value(text, "tpt_route_errors_total",
                        {"server": "refuser_tls", "route": "refused.example.com",
                         "reason": "connect_refused"}) == 1


def test_server_first_protocol_gets_its_greeting_at_once(tpt, peers):
    """A plain listener connects upstream as soon as it accepts, with TCP_QUICKACK off, so the
    handshake's last ACK waits to ride on the client's first bytes. A server-first protocol
    (SMTP, MySQL) has none: tpt must send that ACK itself, or the server cannot accept the
    connection, and greet, before the kernel's delayed-ACK timer (200 ms)."""
    greeting = b"220 mail.example.com ESMTP\r\n"

    def greet(conn):
        conn.sendall(greeting)
        return recv_all(conn)

    mail = peers.tcp(greet)
    port = free_port()
    proc = tpt(config_text({"smtp": {"listen": [f"127.0.0.1:{port}"], "default": "mail"}},
                           {"mail": f"tcp://{mail.address}"}))
    waits = []
    for _ in range(5):
        start = time.monotonic()
        with connect(port) as s:
            assert recv_exactly(s, len(greeting)) == greeting
            waits.append(time.monotonic() - start)
            s.sendall(b"QUIT\r\n")
            s.shutdown(socket.SHUT_WR)
    assert sorted(waits)[2] < 0.1, f"greeting after {waits} s"
    assert all(r["result"] == "ok" for r in wait_access(proc, count=5))


def test_unanswered_connect_times_out_at_connect_timeout(tpt):
    """An upstream whose accept queue is full drops every SYN: the connect never completes,
    and tpt closes the client at the route's connect_timeout (SPEC §4.5)."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # never accepted: room for one queued connection
    queued = []
    try:
        for _ in range(2):  # fill the queue; a further SYN is dropped, not refused
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(full.getsockname())
            queued.append(c)
        port = free_port()
        servers = {"slow": {"listen": [f"127.0.0.1:{port}"], "default": "silent",
                            "via": {"connect_timeout": "1s"}}}
        proc = tpt(config_text(servers, {"silent": f"tcp://127.0.0.1:{full.getsockname()[1]}"}))

        start = time.monotonic()
        with connect(port) as s:
            s.sendall(b"hello?")
            assert_closed_without_bytes(s, within=10.0)
        elapsed = time.monotonic() - start
        assert 0.8 <= elapsed < 5.0, f"closed after {elapsed:.2f}s with connect_timeout 1s"
        (rec,) = wait_access(proc)
        assert rec["result"] == "connect_timeout", rec
        assert metric_value(proc.metrics(), "tpt_route_errors_total",
                            {"server": "slow", "route": "default",
                             "reason": "connect_timeout"}) == 1
    finally:
        for c in queued:
            c.close()
        full.close()


def _garbage_client(port, kind, rng, hello):
    """One hostile or broken client of kind 0..5; returns when its connection is done."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if kind == 0:
            return  # connect and close
        if kind == 1:
            s.sendall(rng.randbytes(rng.randint(1, 3000)))
        elif kind == 2:
            s.sendall(hello[:rng.randint(1, len(hello) - 1)])  # half a hello
        elif kind == 3:
            # A handshake record header that claims the largest length, then garbage.
            s.sendall(b"\x16\x03\x01\xff\xff" + rng.randbytes(rng.randint(0, 500)))
        elif kind == 4:
            # A hello whose body bytes are scrambled past the record header.
            body = bytearray(hello)
            for _ in range(8):
                body[rng.randint(5, len(body) - 1)] = rng.randint(0, 255)
            s.sendall(bytes(body))
        elif kind == 5:
            s.sendall(hello[:rng.randint(1, len(hello) - 1)])
            # Reset instead of FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            return
        if kind in (1, 3, 4) and rng.random() < 0.5:
            return  # close without waiting for tpt
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass


@pytest.mark.concurrency
def test_a_thousand_garbage_connections_leave_tpt_serving(tpt, peers, pki):
    good = peers.tls("up_good")
    port = free_port()
    servers = {"edge": {"listen": [f"127.0.0.1:{port}"], "tls": True, "default": "ban",
                        "client_hello_timeout": "2s", "maxclients": 2000,
                        "sni": {"a.example.com": "good"}}}
    proc = tpt(config_text(servers, {"good": url(good)}))
    hello = client_hello("a.example.com")
    fds_before = open_fds(proc.popen.pid)
    rng = random.Random(20261125)
    jobs = [(i % 6, random.Random(rng.random())) for i in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(_garbage_client, port, kind, r, hello) for kind, r in jobs]
        for f in concurrent.futures.as_completed(futures, timeout=120):
            f.result()

    assert proc.popen.poll() is None, proc.log_text()[-2000:]
    wait_metric(proc, "tpt_active_connections", {"name": "edge",
                                                 "listen": f"127.0.0.1:{port}"}, 0, timeout=15)
    # No descriptor leaked: back to what it held before, give or take the admin's own.
    wait_until(lambda: open_fds(proc.popen.pid) <= fds_before + 4, 10,
               f"open fds back to about {fds_before}")
    body, _ = https_get(port, "a.example.com", pki)
    assert body == "upstream=up_good sni=a.example.com"
    assert http_get(proc.admin + "/healthz")[0] == 200
    assert proc.popen.poll() is None
    allowed = {"ban", "ok", "client_closed", "client_reset", "upstream_reset",
               "client_hello_timeout"}
    results = {r["result"] for r in access_records(proc)}
    assert results <= allowed, results
    errors = [r for r in log_records(proc.log_text()) if r.get("level") in ("error", "critical")]
    assert not errors, errors[:5]
    # Scrambled hellos may still carry a readable SNI: whatever reached the good upstream
    # asked for a.example.com, and none of the garbage did.
    assert all(s == "a.example.com" for s in good.snis)


def test_client_hello_timeout_cuts_silent_and_stalled_clients(tpt, peers):
    echo = peers.tcp(echo_handler)
    port = free_port()
    servers = {"edge": {"listen": [f"127.0.0.1:{port}"], "tls": True, "default": "up",
                        "client_hello_timeout": "500ms"}}
    proc = tpt(config_text(servers, {"up": url(echo)}))
    hello = client_hello("a.example.com")
    with connect(port) as silent, connect(port) as stalled:
        stalled.sendall(hello[:40])
        took_silent = assert_closed_without_bytes(silent, within=5)
        took_stalled = assert_closed_without_bytes(stalled, within=5)
    assert 0.4 <= took_silent <= 3.0, took_silent
    assert took_stalled <= 3.0, took_stalled
    # Timeout closes; it does not fall through to the default route's upstream.
    assert echo.accepted == 0
    records = wait_access(proc, count=2)
    assert [r["result"] for r in records] == ["client_hello_timeout"] * 2
    assert metric(proc, "tpt_route_errors_total", {"server": "edge", "route": "default",
                                                   "reason": "client_hello_timeout"}) == 2


# --- ClientHellos split into bytes and larger than one MTU ----------------------------------

def _hello_file(name):
    data = (HELLO_DIR / name).read_bytes()
    assert data[:1] == b"\x16", name
    return data


def test_split_and_large_client_hellos_route_by_sni_and_arrive_unchanged(tpt, peers):
    big_alpn = [f"{'q' * 200}{i:02d}" for i in range(28)]
    cases = [
        # (name, hello bytes, route key that must pick it, send one byte per segment)
        ("tls13", _hello_file("openssl_tls13_sni.bin"), "tls13.example.com", True),
        ("records", _hello_file("openssl_multi_record.bin"), "records.example.com", True),
        ("alpn", _hello_file("openssl_large_alpn.bin"), "large.example.com", True),
        ("six_kib", client_hello("big.example.com", alpn=big_alpn), "big.example.com", True),
        ("curl", _hello_file("curl_sni.bin"), "curl.example.net", True),
    ]
    assert len(cases[3][1]) > 6000, "the built hello should be about 6 KiB"
    assert len(cases[2][1]) > 1500 and len(cases[1][1]) > 1500
    ups = {name: peers.tcp(record_then_reply(f"routed to {name}".encode()))
           for name, *_ in cases}
    default_up = peers.tcp(record_then_reply(b"routed to default"))
    port = free_port()
    sni = {route: name for name, _, route, _ in cases}
    servers = {"edge": {"listen": [f"127.0.0.1:{port}"], "tls": True, "sni": sni,
                        "default": "dflt", "client_hello_timeout": "20s"}}
    upstream = {name: url(u) for name, u in ups.items()}
    upstream["dflt"] = url(default_up)
    proc = tpt(config_text(servers, upstream))

    for name, hello, _, one_by_one in cases:
        with connect(port, timeout=20, nodelay=True) as s:
            if one_by_one:
                for i in range(len(hello)):
                    s.send(hello[i:i + 1])
            else:
                s.sendall(hello)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == f"routed to {name}".encode(), name
        wait_until(lambda u=ups[name]: u.result_count() == 1, 10, f"{name} upstream record")
        assert ups[name].results[0] == hello, f"{name}: upstream got different bytes"

    # Larger than the 16 KiB limit: no SNI, so the default route, still forwarded unchanged.
    too_large = _hello_file("openssl_too_large.bin")
    assert len(too_large) > 16 * 1024
    with connect(port, timeout=20, nodelay=True) as s:
        s.sendall(too_large)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"routed to default"
    wait_until(lambda: default_up.result_count() == 1, 10, "default upstream record")
    assert default_up.results[0] == too_large

    records = wait_access(proc, count=len(cases) + 1)
    routes = sorted(r["route"] for r in records)
    assert routes == sorted([route for _, _, route, _ in cases] + ["default"])
    assert all(r["result"] == "ok" for r in records)


# --- IPv6, idle_timeout ---------------------------------------------------------------------

def _have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _have_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_listener_and_tcp6_upstream(tpt, peers, pki):
    tls6 = peers.tls("up_v6", host="::1")
    echo6 = peers.tcp(echo_handler, host="::1")
    port = free_port("::1")
    servers = {"six": {"listen": [f"[::1]:{port}"], "protocol": "tcp6", "tls": True,
                       "sni": {"v6.example.com": "up_v6"}, "default": "echo6"}}
    proc = tpt(config_text(servers, {"up_v6": url(tls6, "tcp6"), "echo6": url(echo6, "tcp6")}))

    body, _ = https_get(port, "v6.example.com", pki, host="::1")
    assert body == "upstream=up_v6 sni=v6.example.com"
    out = subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert",
                          str(pki.ca_cert), "--resolve", f"v6.example.com:{port}:[::1]",
                          f"https://v6.example.com:{port}/"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout == b"upstream=up_v6 sni=v6.example.com"
    hello = client_hello(None)
    with connect(port, host="::1") as s:
        s.sendall(hello)
        assert recv_exactly(s, len(hello)) == hello  # no SNI: default, the v6 echo upstream
    assert tls6.snis == ["v6.example.com"] * 2

    records = wait_access(proc, count=3)
    for r in records:
        assert r["listen"] == f"[::1]:{port}"
        assert re.fullmatch(r"\[::1\]:\d+", r["client"]), r["client"]
    assert sorted(r["upstream"] for r in records) == ["echo6", "up_v6", "up_v6"]


def _still_open(sock):
    """True while sock has neither EOF nor a reset waiting (no data is expected on it)."""
    sock.settimeout(0)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(10)


def test_idle_timeout_closes_an_idle_tunnel_only(tpt, peers):
    echo = peers.tcp(echo_handler)
    sink = peers.tcp(record_then_reply())
    port, sink_port = free_port(), free_port()
    servers = {"idle": {"listen": [f"127.0.0.1:{port}"], "default": "up",
                        "idle_timeout": "1s"},
               "oneway": {"listen": [f"127.0.0.1:{sink_port}"], "default": "sink",
                          "idle_timeout": "1s"}}
    proc = tpt(config_text(servers, {"up": url(echo), "sink": url(sink)}))
    with connect(port) as idle, connect(port) as busy, connect(sink_port) as oneway:
        idle.sendall(b"once")
        assert recv_exactly(idle, 4) == b"once"
        last_activity = time.monotonic()
        # For 3 s, the busy tunnel talks both ways and the one-way tunnel only towards its
        # upstream, every 0.3 s (pacing, not synchronisation). Both must outlive the 1 s idle
        # timeout: "idle" means idle in both directions.
        ticks = 0
        while time.monotonic() - last_activity < 3.0:
            busy.sendall(b"tick")
            assert recv_exactly(busy, 4) == b"tick"
            oneway.sendall(b"tick")
            ticks += 1
            time.sleep(0.3)
        assert not _still_open(idle), "the idle tunnel outlived idle_timeout 1s by 2 s"
        assert _still_open(oneway), "a tunnel busy in one direction was closed as idle"
        busy.sendall(b"still")
        assert recv_exactly(busy, 5) == b"still"
        oneway.shutdown(socket.SHUT_WR)
        assert recv_all(oneway) == b""
    wait_until(lambda: sink.result_count() == 1, 10, "the sink's record")
    assert sink.results == [b"tick" * ticks]
    records = wait_access(proc, count=3)
    results = sorted((r["server"], r["result"]) for r in records)
    assert results == [("idle", "idle_timeout"), ("idle", "ok"), ("oneway", "ok")], records


def test_idle_timeout_is_not_early(tpt, peers):
    echo = peers.tcp(echo_handler)
    port = free_port()
    servers = {"idle": {"listen": [f"127.0.0.1:{port}"], "default": "up",
                        "idle_timeout": "2s"}}
    proc = tpt(config_text(servers, {"up": url(echo)}))
    with connect(port) as s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        start = time.monotonic()
        took = assert_closed_without_bytes(s, within=10)
    assert 1.9 <= took <= 4.5 and time.monotonic() - start >= 1.9, took
    (rec,) = wait_access(proc)
    assert rec["result"] == "idle_timeout"


# --- access log -----------------------------------------------------------------------------

def _tunnel_for_the_log(port):
    """A ClientHello for Log.Example.ORG plus 1000 bytes; the upstream answers 777 bytes.
    Returns (client address as tpt writes it, bytes sent, bytes received)."""
    hello = client_hello("Log.Example.ORG")
    with connect(port) as s:
        client = "%s:%d" % s.getsockname()[:2]
        s.sendall(hello + b"z" * 1000)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    assert got == b"a" * 777
    return client, len(hello) + 1000, 777


@pytest.mark.parametrize("log_format", ["txt", "json"])
def test_access_log_line_has_every_field(tpt, peers, log_format):
    up = peers.tcp(record_then_reply(b"a" * 777))
    port = free_port()
    servers = {"logged": {"listen": [f"127.0.0.1:{port}"], "tls": True, "default": "ban",
                          "sni": {"*.example.org": "up"}}}
    proc = tpt(config_text(servers, {"up": url(up)}, log_format=log_format))
    client, sent, received = _tunnel_for_the_log(port)
    (rec,) = wait_access(proc)

    assert set(ACCESS_FIELDS) <= set(rec), sorted(rec)
    assert rec["level"] == "info" and RFC3339_UTC.match(rec["ts"]), rec
    assert rec["server"] == "logged"
    assert rec["listen"] == f"127.0.0.1:{port}"
    assert rec["client"] == client
    assert rec["sni"].lower() == "log.example.org"
    assert rec["route"] == "*.example.org"  # the key as written, never the raw SNI
    assert rec["upstream"] == "up"
    assert rec["connect_target"] == ""  # direct: no CONNECT target
    assert int(rec["bytes_to_upstream"]) == sent
    assert int(rec["bytes_to_client"]) == received
    assert 0 <= int(rec["duration_ms"]) < 10_000
    assert rec["result"] == "ok"

    text = proc.log_text()
    if log_format == "json":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines
        for ln in lines:
            obj = json.loads(ln)  # every line is one JSON object
            assert isinstance(obj, dict) and {"ts", "level", "msg"} <= set(obj), ln
            assert RFC3339_UTC.match(obj["ts"]), ln
    else:
        line = next(ln for ln in text.splitlines() if " access " in ln)
        assert not line.lstrip().startswith("{")
        for field in ACCESS_FIELDS:
            assert re.search(rf" {field}=", line), (field, line)
    assert access_records(proc) == [rec]
    assert len(log_records(text)) == len([ln for ln in text.splitlines() if ln.strip()])


# --- no SNI, bad SNI, resets, maxclients over several addresses -----------------------------

def test_not_tls_and_invalid_sni_take_the_default_route(tpt, peers):
    """SPEC §4.2: not TLS, or an SNI that is not a valid DNS name -> no SNI -> default, and the
    bytes read so far are forwarded unchanged."""
    wild = peers.tcp(record_then_reply(b"wildcard"))
    dflt = peers.tcp(record_then_reply(b"default"))
    port = free_port()
    servers = {"edge": {"listen": [f"127.0.0.1:{port}"], "tls": True, "default": "dflt",
                        "sni": {"*.example.com": "wild"}, "client_hello_timeout": "5s"}}
    proc = tpt(config_text(servers, {"wild": url(wild), "dflt": url(dflt)}))
    good = _hello_file("openssl_tls13_sni.bin")  # SNI TLS13.Example.COM, once in the bytes
    assert good.count(b"TLS13.Example.COM") == 1

    def patched(name):  # same length, so every length field stays right
        assert len(name) == len(b"TLS13.Example.COM")
        return good.replace(b"TLS13.Example.COM", name)

    def long_name(length):  # labels of 63 and a last one that makes up the length
        last = length - 3 * 64 - len(".example.com")
        return ".".join(["h" * 63] * 3 + ["t" * last]) + ".example.com"

    assert len(long_name(253)) == 253
    cases = [
        (good, b"wildcard"),
        (patched(b"TL_13.Example.COM"), b"wildcard"),  # '_' and '-' are allowed
        (patched(b"TL-13.Example.COM"), b"wildcard"),
        (client_hello(long_name(253)), b"wildcard"),     # the longest valid name
        (client_hello(long_name(254)), b"default"),      # one byte too long
        (patched(b"TLS1!.Example.COM"), b"default"),   # '!' is not a host-name byte
        (patched(b"TLS13..xample.COM"), b"default"),   # empty label
        (patched(b"TLS13 Example.COM"), b"default"),   # space
        (patched(b"TLS13.Example.CO\x00"), b"default"),  # NUL
        (good[:40], b"default"),  # half a hello, then the client's FIN
        (b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", b"default"),  # not TLS at all
    ]
    for sent, answer in cases:
        with connect(port) as s:
            s.sendall(sent)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == answer, sent[:60]
    wait_until(lambda: wild.result_count() + dflt.result_count() == len(cases), 10,
               "every upstream record")
    assert sorted(wild.results) == sorted(sent for sent, a in cases if a == b"wildcard")
    assert sorted(dflt.results) == sorted(sent for sent, a in cases if a == b"default")
    records = wait_access(proc, count=len(cases))
    expected_routes = ["*.example.com" if a == b"wildcard" else "default" for _, a in cases]
    assert sorted(r["route"] for r in records) == sorted(expected_routes)
    # An invalid SNI is no SNI: it never reaches the log as a name.
    assert all(r["sni"] == "" for r in records if r["route"] == "default"), \
        [r["sni"] for r in records]


def test_a_reset_on_either_side_closes_both(tpt, peers):
    """SPEC §4.6: a reset or error closes both sides."""
    upstream_resets = threading.Event()

    def reset_after_hello(conn):
        assert conn.recv(5) == b"hello"
        upstream_resets.wait(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        return "reset sent"

    def wait_for_close(conn):
        conn.recv(5)
        conn.sendall(b"ready")
        try:
            data = recv_all(conn)
        except ConnectionResetError:
            data = b""
        return ("closed", data)

    resetter = peers.tcp(reset_after_hello)
    waiter = peers.tcp(wait_for_close)
    p1, p2 = free_port(), free_port()
    servers = {"up_rst": {"listen": [f"127.0.0.1:{p1}"], "default": "resetter"},
               "client_rst": {"listen": [f"127.0.0.1:{p2}"], "default": "waiter"}}
    proc = tpt(config_text(servers, {"resetter": url(resetter), "waiter": url(waiter)}))

    with connect(p1) as s:
        s.sendall(b"hello")
        wait_until(lambda: resetter.accepted == 1, 10, "the upstream connection")
        upstream_resets.set()
        assert_closed_without_bytes(s, within=5)

    c = connect(p2)
    c.sendall(b"hello")
    assert recv_exactly(c, 5) == b"ready"
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    c.close()
    wait_until(lambda: waiter.result_count() == 1, 5, "the upstream to see the close")
    assert waiter.results == [("closed", b"")]

    records = {r["server"]: r for r in wait_access(proc, count=2)}
    assert records["up_rst"]["result"] == "upstream_reset"
    assert records["client_rst"]["result"] == "client_reset"


@pytest.mark.concurrency
def test_maxclients_counts_a_server_over_all_its_listen_addresses(tpt, peers):
    echo = peers.tcp(echo_handler)
    p1, p2 = free_port(), free_port()
    servers = {"two": {"listen": [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"], "maxclients": 2,
                       "default": "up"}}
    proc = tpt(config_text(servers, {"up": url(echo)}))
    with connect(p1) as a, connect(p2) as b:
        for s in (a, b):
            s.sendall(b"hi")
            assert recv_exactly(s, 2) == b"hi"
        for port in (p1, p2):
            with connect(port) as extra:
                assert_closed_without_bytes(extra)
    wait_metric(proc, "tpt_maxclients_rejected_total", {"name": "two"}, 2)
    assert echo.accepted == 2
