"""Inbound HTTP (SPEC §12), black-box: the explicit proxy that HTTPS_PROXY clients use
(`accept_connect`) with real clients (curl -x, Python's urllib/http.client) chained through a
real squid with basic auth, its status answers (403, 502, 504, 405, 400, 408), loops and
domain fronting (`sni_must_match`); and plain-HTTP Host routing (`http: true`), alone and
beside TLS on one port, with heads split byte by byte, absolute-form targets, oversized and
garbage heads and slow clients."""
import base64
import hashlib
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from helpers import (TptProcess, access_records, free_port, metric_value, wait_access,
                     wait_until)
from proxy_peers import ScriptedProxy, Squid, read_until_closed
from tls_peers import TcpServer, TlsServer, echo_handler, recv_head
from tls_peers import client_hello as python_client_hello

USER = "tpt"
PASSWORD = "S3cret-Squid-Pw-http-5e1b"
APP_PASSWORD = "App-Own-Pw-never-forwarded-3d9"
NAMES = ["tls-a.test", "tls-b.test", "localhost"]


def basic(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


ENV = {"SQUID_AUTH": basic(USER, PASSWORD), "BAD_AUTH": basic(USER, "wrong-pw-4f0c")}


# --- peers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def squid():
    proxy = Squid({USER: PASSWORD}, hosts=NAMES)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tls_server(pki):
    s = TlsServer(pki, "tls-a.test", names=NAMES)
    yield s
    s.close()


def http_origin(name):
    """A plain HTTP server: reads one request head, answers `upstream=<name>` and the head's
    SHA-256, so a test can check the bytes arrived unchanged. Result: the head."""

    def handler(conn):
        head = recv_head(conn)
        body = f"upstream={name} sha256={hashlib.sha256(head).hexdigest()}".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\nConnection: close\r\n\r\n" + body)
        return head

    return handler


@pytest.fixture(scope="module")
def origins():
    servers = {name: TcpServer(http_origin(name)) for name in ("http-a", "http-b")}
    yield servers
    for s in servers.values():
        s.close()


def explicit_config(port, lenient_port, squid, extra_routes=""):
    return f"""\
log: info
log_format: json
admin:
  listen: "127.0.0.1:{free_port()}"
servers:
  explicit:
    listen: ["127.0.0.1:{port}"]
    accept_connect: true
    sni_must_match: true
    client_hello_timeout: 1s
    default: original
    sni:
      tls-a.test:
        upstream: squid
        via:
          use_sni_as_target: true
          connect_timeout: 5s
          headers:
            Proxy-Authorization: "Basic ${{SQUID_AUTH}}"
      refused.test:
        upstream: squid
        via:
          use_sni_as_target: true
          headers:
            Proxy-Authorization: "Basic ${{BAD_AUTH}}"
      "*.banned.test": ban
{extra_routes}  lenient:
    listen: ["127.0.0.1:{lenient_port}"]
    accept_connect: true
    default: ban
    sni:
      tls-a.test:
        upstream: squid
        via:
          use_sni_as_target: true
          headers:
            Proxy-Authorization: "Basic ${{SQUID_AUTH}}"
upstream:
  squid: "tcp://127.0.0.1:{squid.port}"
"""


@pytest.fixture(scope="module")
def explicit(tpt_bin, squid, tmp_path_factory):
    """tpt as an explicit proxy in front of squid; module-wide (its log is shared)."""
    silent = ScriptedProxy("silent")
    port, lenient_port = free_port(), free_port()
    extra = """\
      slow.test:
        upstream: silent
        via:
          use_sni_as_target: true
          connect_timeout: 300ms
"""
    text = explicit_config(port, lenient_port, squid, extra) + f'  silent: "tcp://127.0.0.1:{silent.port}"\n'
    proc = TptProcess(tpt_bin, text, env=ENV, workdir=tmp_path_factory.mktemp("explicit"))
    proc.port, proc.lenient_port = port, lenient_port
    yield proc
    proc.stop()
    silent.stop()
    assert PASSWORD not in proc.log_text() and ENV["SQUID_AUTH"] not in proc.log_text()
    assert APP_PASSWORD not in proc.log_text()


def connect_raw(port, head, timeout=5.0):
    """Sends `head` to tpt; returns (status line, whole answer) once tpt closes or answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head)
        answer, closed = read_until_closed(s, timeout)
        assert closed, f"tpt kept the connection open after {answer!r}"
    finally:
        s.close()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return status, answer


def record_for(proc, key, value):
    return wait_access(proc, lambda r: r.get(key) == value)[-1]


# --- the explicit proxy (accept_connect) ---------------------------------------------------

def test_curl_https_proxy_goes_through_squid_with_tpts_credentials(explicit, squid, tls_server,
                                                                   pki):
    mark = squid.log_mark()
    # The application's own proxy credential (-U) must not reach squid: squid accepts only
    # tpt's, so the request succeeds only if tpt replaced it.
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca_cert),
         "-x", f"http://127.0.0.1:{explicit.port}", "-U", f"app:{APP_PASSWORD}",
         f"https://tls-a.test:{tls_server.port}/"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "upstream=tls-a.test sni=tls-a.test"
    squid.wait_access(f"CONNECT tls-a.test:{tls_server.port}", mark)
    rec = record_for(explicit, "connect_target", f"tls-a.test:{tls_server.port}")
    assert rec["route"] == "tls-a.test" and rec["result"] == "ok"
    assert rec["upstream"] == "squid"


def test_python_urllib_with_https_proxy_env(explicit, tls_server, pki):
    # urllib's tunnel is http.client.set_tunnel: "CONNECT host:port HTTP/1.0" without Host.
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{explicit.port}"}),
        urllib.request.HTTPSHandler(context=ctx))
    with opener.open(f"https://tls-a.test:{tls_server.port}/", timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == b"upstream=tls-a.test sni=tls-a.test"


def test_default_original_connects_to_the_requested_host_directly(explicit, pki, tls_server):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca_cert),
         "-x", f"http://127.0.0.1:{explicit.port}", f"https://localhost:{tls_server.port}/"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "upstream=tls-a.test sni=localhost"
    rec = wait_access(explicit, lambda r: r.get("upstream") == "original" and
                      r.get("sni") == "localhost")[-1]
    assert rec["route"] == "default" and rec["result"] == "ok" and rec["connect_target"] == ""


def read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        assert data, f"closed before the answer's end: {head!r}"
        head += data
    return head


def test_ipv6_literal_connect_goes_to_the_literal(explicit):
    server = TcpServer(echo_handler, host="::1")
    try:
        with socket.create_connection(("127.0.0.1", explicit.port), timeout=5) as s:
            s.sendall(f"CONNECT [::1]:{server.port} HTTP/1.1\r\n"
                      f"Host: [::1]:{server.port}\r\n\r\n".encode())
            assert read_head(s) == b"HTTP/1.1 200 Connection established\r\n\r\n"
            # sni_must_match: the client speaks first; bytes that are no ClientHello pass.
            s.sendall(b"ping-v6")
            s.shutdown(socket.SHUT_WR)
            assert read_until_closed(s, 5) == (b"ping-v6", True)
    finally:
        server.close()
    rec = record_for(explicit, "sni", "::1")
    assert rec["upstream"] == "original" and rec["result"] == "ok"


def test_a_client_that_never_speaks_is_closed_when_sni_must_match(explicit):
    server = TcpServer(lambda c: c.sendall(b"server-first"), host="::1")
    try:
        with socket.create_connection(("127.0.0.1", explicit.port), timeout=5) as s:
            s.sendall(f"CONNECT [::1]:{server.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(s).startswith(b"HTTP/1.1 200 ")
            assert read_until_closed(s, 5) == (b"", True)
    finally:
        server.close()


@pytest.mark.parametrize("head,status,words", [
    (b"CONNECT x.banned.test:443 HTTP/1.1\r\nHost: x.banned.test:443\r\n\r\n",
     "HTTP/1.1 403 Forbidden", [b"ban", b"x.banned.test"]),
    (b"GET http://tls-a.test/ HTTP/1.1\r\nHost: tls-a.test\r\n\r\n",
     "HTTP/1.1 405 Method Not Allowed", [b"HTTPS_PROXY"]),
    (b"\x16\x03\x01\x00\x05hello\r\n\r\n", "HTTP/1.1 400 Bad Request", [b"bad_request"]),
    (b"CONNECT refused.test:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 502 Bad Gateway",
     [b"proxy_status", b"407"]),
    (b"CONNECT slow.test:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 504 Gateway Timeout",
     [b"connect_timeout"]),
])
def test_failures_are_answered_with_a_status_and_a_reason(explicit, head, status, words):
    start = time.monotonic()
    got, answer = connect_raw(explicit.port, head)
    assert time.monotonic() - start < 2.0  # slow.test: connect_timeout 300ms
    assert got == status, answer
    for w in words:
        assert w in answer, answer
    assert b"Content-Length: " in answer and b"Connection: close" in answer


def test_refused_upstream_is_502(explicit):
    closed = free_port()  # nobody listens there
    got, answer = connect_raw(explicit.port, f"CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\n".encode())
    assert got == "HTTP/1.1 502 Bad Gateway"
    assert b"connect_refused" in answer


def test_connect_to_tpts_own_listener_is_a_loop(explicit):
    got, answer = connect_raw(explicit.port,
                              f"CONNECT 127.0.0.1:{explicit.port} HTTP/1.1\r\n\r\n".encode())
    assert got == "HTTP/1.1 502 Bad Gateway"
    assert b"loop" in answer
    assert metric_value(explicit.metrics(), "tpt_route_errors_total",
                        {"server": "explicit", "reason": "loop"}) >= 1


def test_slow_head_gets_408_within_the_deadline(explicit):
    s = socket.create_connection(("127.0.0.1", explicit.port), timeout=5)
    try:
        start = time.monotonic()
        s.sendall(b"CONNECT tls-a.test:")  # and never the rest
        answer, closed = read_until_closed(s, 5)
        assert closed
        elapsed = time.monotonic() - start
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
    assert 0.8 < elapsed < 3.0


def fronted(port, tls_server):
    """CONNECT tls-a.test, then a ClientHello for another name; what came back, and whether
    tpt closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(f"CONNECT tls-a.test:{tls_server.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(s).startswith(b"HTTP/1.1 200 ")
        s.sendall(python_client_hello("tls-b.test"))  # another name than the CONNECT host
        return read_until_closed(s, 3)
    finally:
        s.close()


def test_domain_fronting_is_closed_by_sni_must_match(explicit, tls_server):
    assert fronted(explicit.port, tls_server) == (b"", True)
    rec = record_for(explicit, "result", "sni_mismatch")
    assert rec["route"] == "tls-a.test"


def test_domain_fronting_is_relayed_without_sni_must_match(explicit, tls_server):
    answer, _ = fronted(explicit.lenient_port, tls_server)
    assert answer[:1] == b"\x16"  # the server's handshake came back: relayed


def test_the_apps_credential_and_tpts_never_reach_the_log(explicit):
    # The fixture's teardown checks the whole log; here the access lines carry no header.
    for rec in access_records(explicit):
        assert "Proxy-Authorization" not in str(rec)


# --- plain HTTP Host routing (http: true), beside TLS ------------------------------------

@pytest.fixture(scope="module")
def web(tpt_bin, origins, tls_server, tmp_path_factory):
    port = free_port()
    text = f"""\
log: info
log_format: json
admin:
  listen: "127.0.0.1:{free_port()}"
servers:
  web:
    listen: ["127.0.0.1:{port}"]
    tls: true
    http: true
    client_hello_timeout: 1s
    default: ban
    sni:
      a.test: http_a
      "*.b.test": http_b
      tls-a.test: tls
upstream:
  http_a: "tcp://127.0.0.1:{origins['http-a'].port}"
  http_b: "tcp://127.0.0.1:{origins['http-b'].port}"
  tls: "tcp://127.0.0.1:{tls_server.port}"
"""
    proc = TptProcess(tpt_bin, text, workdir=tmp_path_factory.mktemp("web"))
    proc.port = port
    yield proc
    proc.stop()


def send_in_pieces(port, data, piece):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(0, len(data), piece):
            s.sendall(data[i:i + piece])
        answer, closed = read_until_closed(s, 5)
        assert closed, f"still open after {answer!r}"
        return answer
    finally:
        s.close()


def test_curl_plain_http_is_routed_by_host(web):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"a.test:{web.port}:127.0.0.1",
         f"http://a.test:{web.port}/path"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("upstream=http-a ")
    rec = record_for(web, "sni", "a.test")
    assert rec["route"] == "a.test" and rec["upstream"] == "http_a"


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_split_head_arrives_unchanged_at_the_wildcard_route(web, piece):
    head = (b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST:  Deep.X.B.Test:8080 \r\n"
            b"Accept: */*\r\n\r\n")
    answer = send_in_pieces(web.port, head, piece)
    assert b"upstream=http-b sha256=" + hashlib.sha256(head).hexdigest().encode() in answer


def test_absolute_form_uri_host_wins_over_the_host_header(web):
    head = b"GET http://y.b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"
    assert b"upstream=http-b " in send_in_pieces(web.port, head, 4096)


def test_tls_on_the_same_port_is_routed_by_sni(web, pki):
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="tls-a.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: tls-a.test\r\n\r\n")
            assert tls.recv(4096).endswith(b"upstream=tls-a.test sni=tls-a.test")


@pytest.mark.parametrize("what,data", [
    ("oversized", b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 17000 + b"\r\nHost: a.test\r\n\r\n"),
    ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n"),
    ("no host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
])
def test_heads_without_a_usable_host_take_the_default(web, what, data):
    before = len([r for r in access_records(web) if r.get("route") == "default"])
    answer = send_in_pieces(web.port, data, 65536)
    assert answer == b""  # default: ban
    wait_until(lambda: len([r for r in access_records(web) if r.get("route") == "default"])
               > before, 10, f"{what}: an access line for the default route")


def test_a_slow_head_is_cut_at_client_hello_timeout_without_hurting_others(web):
    slow = socket.create_connection(("127.0.0.1", web.port), timeout=5)
    try:
        start = time.monotonic()
        slow.sendall(b"GET / HTTP/1.1\r\nHo")
        # Another client is served meanwhile.
        assert b"upstream=http-a " in send_in_pieces(
            web.port, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", 4096)
        assert read_until_closed(slow, 5) == (b"", True)
        assert 0.8 < time.monotonic() - start < 3.0
    finally:
        slow.close()
    wait_access(web, lambda r: r.get("result") == "client_hello_timeout")
