"""CONNECT tunnelling, black-box (SPEC §3 `via`, §4 steps 4-5, §5): through a real squid with
basic auth (static target, SNI as target, per-SNI via overrides and `via: {}`, a refused
password, a real TLS handshake end to end), and through a scripted proxy for what squid never
does (a head split byte by byte, tunnel bytes in the head's write, 502, silence, garbage, the
exact request bytes, SNIs that are not host names), and the `stats_interval` in-flight line."""
import base64
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import free_port, http_get, metric_value, wait_until
from proxy_peers import (OK_HEAD, ScriptedProxy, Squid, handmade_client_hello,
                         read_until_closed, recv_exactly)
from tls_peers import TlsServer
from tls_peers import client_hello as python_client_hello

USER = "tpt"
PASSWORD = "S3cret-Squid-Pw-7f2a"
WRONG_PASSWORD = "Wr0ng-Pw-9c41-never-logged"
NAMES = ["tls-a.test", "tls-b.test", "direct.test", "localhost"]
SERVER = "front"


def basic(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


GOOD_AUTH = basic(USER, PASSWORD)
BAD_AUTH = basic(USER, WRONG_PASSWORD)


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def squid():
    proxy = Squid({USER: PASSWORD}, hosts=NAMES)
    yield proxy
    proxy.stop()


@pytest.fixture
def tls_server(pki):
    """Factory of TLS echo servers valid for NAMES, recording SNIs; all closed at teardown.
    port: 0 for any, or the one to reuse."""
    servers = []

    def start(port=0):
        s = TlsServer(pki, f"tls{len(servers)}", names=NAMES, port=port)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def scripted():
    """Factory of scripted CONNECT proxies, all stopped at teardown."""
    proxies = []

    def start(mode="ok", **kwargs):
        p = ScriptedProxy(mode, **kwargs)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.stop()


# --- config and log helpers ----------------------------------------------------------------

def _key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def to_yaml(obj, indent=0):
    """Block-style YAML for nested dicts (scalars and lists as JSON, which YAML reads)."""
    pad = " " * indent
    out = []
    for k, v in obj.items():
        if isinstance(v, dict) and v:
            out.append(f"{pad}{_key(k)}:\n{to_yaml(v, indent + 2)}")
        else:
            out.append(f"{pad}{_key(k)}: {json.dumps(v)}\n")
    return "".join(out)


def config(upstreams, via=None, tls=True, default="proxy", sni=None, port=None, extra=None):
    """A one-server tpt config with JSON logs and an admin port; returns (text, listen port)."""
    port = port or free_port()
    server = {"listen": [f"127.0.0.1:{port}"], "tls": tls, "default": default,
              "client_hello_timeout": "5s"}
    if sni:
        server["sni"] = sni
    if via is not None:
        server["via"] = via
    server.update(extra or {})
    cfg = {
        "version": 1,
        "log": "info",
        "log_format": "json",
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "servers": {SERVER: server},
        "upstream": upstreams,
    }
    return to_yaml(cfg), port


def auth_via(**kwargs):
    via = {"connect_timeout": "5s", "headers": {"Proxy-Authorization": "Basic ${PROXY_AUTH}"}}
    via.update(kwargs)
    return via


def log_records(proc):
    records = []
    for line in proc.log_text().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def access_records(proc):
    return [r for r in log_records(proc) if r.get("msg") == "access"]


def wait_access(proc, count=1, timeout=10.0):
    """The first `count` access records, waiting for them with a deadline."""
    return wait_until(lambda: (a := access_records(proc)) and len(a) >= count and a,
                      timeout, f"{count} access line(s) in tpt's log")


def errors_total(proc, reason):
    return metric_value(proc.metrics(), "tpt_route_errors_total",
                        {"server": SERVER, "reason": reason})


def tls_roundtrip(port, sni, pki, payload):
    """A verifying TLS client through tpt: handshake for sni, send payload, read its echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(payload)
            got = recv_exactly(tls, len(payload), timeout=10)
            return got, tls.version()


def assert_no_secret(text):
    for secret in (PASSWORD, WRONG_PASSWORD, GOOD_AUTH, BAD_AUTH):
        assert secret not in text, f"a credential ({secret[:4]}...) leaked into the log"


# --- squid ---------------------------------------------------------------------------------

def test_squid_static_target_tls_end_to_end(tpt, squid, tls_server, pki):
    mark = squid.log_mark()
    server = tls_server()
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(target=f"127.0.0.1:{server.port}"))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})
    payload = b"hello through squid " * 50

    got, version = tls_roundtrip(port, "tls-a.test", pki, payload)

    assert got == payload
    assert version in ("TLSv1.2", "TLSv1.3")
    assert server.snis == ["tls-a.test"]
    assert server.accepted == 1
    wait_until(lambda: server.result_count() == 1, 10, "the TLS server's end of the tunnel")
    assert server.results[0]["sni"] == "tls-a.test"
    assert server.results[0]["echoed"] == len(payload), "the server saw the payload whole"
    line = squid.wait_access(f"CONNECT 127.0.0.1:{server.port} ", since=mark)
    assert "TCP_TUNNEL/200" in line and f" {USER} " in line, line
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok", rec
    assert rec["connect_target"] == f"127.0.0.1:{server.port}"
    assert rec["sni"] == "tls-a.test"
    assert int(rec["bytes_to_upstream"]) > len(payload)
    assert int(rec["bytes_to_client"]) > len(payload)
    assert metric_value(proc.metrics(), "tpt_upstream_connect_duration_seconds_count",
                        {"server": SERVER, "route": "default"}) == 1
    assert metric_value(proc.metrics(), "tpt_route_connections_total",
                        {"server": SERVER, "route": "default", "upstream": "proxy"}) == 1
    assert_no_secret(proc.log_text())


def test_squid_sni_as_target_resolved_by_squid(tpt, squid, tls_server, pki):
    mark = squid.log_mark()
    server = tls_server()
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(use_sni_as_target=True, target_port=server.port))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    got, _ = tls_roundtrip(port, "tls-b.test", pki, b"sni-target")

    assert got == b"sni-target"
    assert server.snis == ["tls-b.test"]
    line = squid.wait_access(f"CONNECT tls-b.test:{server.port} ", since=mark)
    assert "TCP_TUNNEL/200" in line, line
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok" and rec["connect_target"] == f"tls-b.test:{server.port}", rec


@pytest.mark.concurrency
def test_squid_concurrent_tunnels_keep_their_own_sni(tpt, squid, tls_server, pki):
    server = tls_server()
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(use_sni_as_target=True, target_port=server.port))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})
    jobs = [("tls-a.test" if i % 2 else "tls-b.test", f"payload-{i}-".encode() * (100 + i))
            for i in range(16)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda job: tls_roundtrip(port, job[0], pki, job[1])[0], jobs))

    assert results == [payload for _, payload in jobs]
    assert sorted(server.snis) == sorted(sni for sni, _ in jobs)
    records = wait_access(proc, len(jobs))
    assert all(r["result"] == "ok" for r in records), records
    assert sorted(r["connect_target"] for r in records) == \
        sorted(f"{sni}:{server.port}" for sni, _ in jobs)


def via_override_and_direct(tpt, squid, pki, a, b, c):
    """One tpt whose default route goes to A through squid, tls-b.test to B through squid
    (a per-SNI via), and direct.test straight to C (via: {}); each SNI once."""
    mark = squid.log_mark()
    text, port = config(
        {"proxy": f"tcp://127.0.0.1:{squid.port}", "direct_c": f"tcp://127.0.0.1:{c.port}"},
        via=auth_via(target=f"127.0.0.1:{a.port}"),
        sni={
            "tls-b.test": {"upstream": "proxy", "via": auth_via(target=f"127.0.0.1:{b.port}")},
            "direct.test": {"upstream": "direct_c", "via": {}},
        })
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    for sni in ("tls-a.test", "tls-b.test", "direct.test"):
        got, _ = tls_roundtrip(port, sni, pki, sni.encode())
        assert got == sni.encode()

    assert a.snis == ["tls-a.test"], "the server's via (default route) goes to A through squid"
    assert b.snis == ["tls-b.test"], "the per-SNI via override goes to B through squid"
    assert c.snis == ["direct.test"], "via: {} goes straight to C"
    squid.wait_access(f"CONNECT 127.0.0.1:{a.port} ", since=mark)
    squid.wait_access(f"CONNECT 127.0.0.1:{b.port} ", since=mark)
    records = {r["sni"]: r for r in wait_access(proc, 3)}
    assert all(r["result"] == "ok" for r in records.values()), records
    assert records["tls-a.test"]["connect_target"] == f"127.0.0.1:{a.port}"
    assert records["tls-b.test"]["connect_target"] == f"127.0.0.1:{b.port}"
    assert records["direct.test"]["connect_target"] in ("", "-"), records["direct.test"]
    squid.wait_idle()  # tpt has closed all three tunnels: squid has logged any it carried
    assert not any(f":{c.port} " in line for line in squid.log_since(mark)), \
        "the direct route must not go through squid"


def test_squid_per_sni_via_override_and_direct(tpt, squid, tls_server, pki):
    via_override_and_direct(tpt, squid, pki, tls_server(), tls_server(), tls_server())


def test_squid_lines_of_an_earlier_tunnel_to_the_direct_port_do_not_count(tpt, squid,
                                                                         tls_server, pki):
    """The CI failure of 2026-12-05 made deterministic: squid is shared by the module, and an
    earlier tunnel through it went to port P; now C, the direct route's server, listens on P.
    The direct route goes straight to C, and the squid line naming P is the earlier one's."""
    mark = squid.log_mark()
    earlier = tls_server(port=free_port())
    p = earlier.port
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(target=f"127.0.0.1:{p}"))
    first = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})
    assert tls_roundtrip(port, "tls-a.test", pki, b"earlier")[0] == b"earlier"
    squid.wait_access(f"CONNECT 127.0.0.1:{p} ", since=mark)
    first.stop()
    earlier.close()

    c = tls_server(port=p)
    assert c.port == p
    via_override_and_direct(tpt, squid, pki, tls_server(), tls_server(), c)
    # The earlier line is still there for a scan of the whole log to trip over.
    assert any(f":{p} " in line for line in squid.log_since(0))


def test_squid_wrong_password_is_refused_without_leaking_it(tpt, squid, tls_server):
    mark = squid.log_mark()
    server = tls_server()
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(target=f"127.0.0.1:{server.port}"))
    proc = tpt(text, env={"PROXY_AUTH": BAD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(python_client_hello("tls-a.test"))
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_status", rec
    assert errors_total(proc, "proxy_status") == 1
    refused = [r for r in log_records(proc) if r.get("msg") == "CONNECT refused"]
    assert refused, proc.log_text()
    assert " 407 " in refused[0]["status"] or refused[0]["status"].endswith(" 407"), refused
    assert refused[0].get("proxy_authenticate") == "Basic", refused
    assert_no_secret(proc.log_text())
    assert server.accepted == 0 and server.snis == []
    line = squid.wait_access(f"CONNECT 127.0.0.1:{server.port} ", since=mark)
    assert "TCP_DENIED/407" in line, line


def test_squid_cannot_reach_the_target_is_proxy_status(tpt, squid):
    dead = free_port()
    text, port = config({"proxy": f"tcp://127.0.0.1:{squid.port}"},
                        via=auth_via(target=f"127.0.0.1:{dead}"))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(python_client_hello("tls-a.test"))
        data, closed = read_until_closed(client, timeout=20)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_status", rec
    assert errors_total(proc, "proxy_status") == 1
    refused = [r for r in log_records(proc) if r.get("msg") == "CONNECT refused"]
    assert refused and re.match(r"HTTP/1\.[01] 5\d\d ", refused[0]["status"]), refused
    assert "proxy_authenticate" not in refused[0]
    assert_no_secret(proc.log_text())


# --- scripted proxy ------------------------------------------------------------------------

def plain_tunnel_config(proxy, target="upstream.test:8443", **via):
    """tls: false (no hello needed: tpt connects at accept), static target."""
    return config({"proxy": f"tcp://127.0.0.1:{proxy.port}"}, tls=False,
                  via=auth_via(target=target, **via))


@pytest.mark.parametrize("target", ["upstream.test:8443", "[::1]:8443", "192.0.2.7:443"])
def test_connect_request_bytes_are_exact(tpt, scripted, target):
    proxy = scripted("ok")
    via_headers = {"X-Trace-Id": "abc-123", "Proxy-Authorization": "Basic ${PROXY_AUTH}"}
    text, port = config({"proxy": f"tcp://127.0.0.1:{proxy.port}"}, tls=False,
                        via={"target": target, "connect_timeout": "5s",
                             "headers": via_headers})
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"

    t = target.encode()
    assert proxy.requests == [
        b"CONNECT " + t + b" HTTP/1.1\r\n"
        b"Host: " + t + b"\r\n"
        b"X-Trace-Id: abc-123\r\n"
        b"Proxy-Authorization: Basic " + GOOD_AUTH.encode() + b"\r\n"
        b"\r\n"]
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok" and rec["connect_target"] == target, rec
    assert_no_secret(proc.log_text())
    status, _, body = http_get(proc.admin + "/config")
    assert status == 200 and b"<redacted>" in body, body
    assert_no_secret(body.decode())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_response_head_split_byte_by_byte(tpt, scripted, tls):
    proxy = scripted("byte_by_byte")
    if tls:
        text, port = config({"proxy": f"tcp://127.0.0.1:{proxy.port}"},
                            via=auth_via(target="upstream.test:443"))
        payload = python_client_hello("a.example") + bytes(range(256)) * 64
    else:
        text, port = plain_tunnel_config(proxy)
        payload = bytes(range(256)) * 64
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(payload)  # at once: tpt must hold it until the 2xx is complete
        assert recv_exactly(client, len(payload)) == payload
        client.shutdown(socket.SHUT_WR)
        rest, closed = read_until_closed(client)
        assert closed and rest == b""

    assert proxy.premature == [b""], "tunnel bytes were sent before the CONNECT answer ended"
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok", rec
    assert int(rec["bytes_to_upstream"]) == len(payload)
    assert int(rec["bytes_to_client"]) == len(payload)


@pytest.mark.parametrize("mode,early", [
    ("head_with_data", b"EARLY-TUNNEL-BYTES\x00\x01\x02 right after CRLFCRLF"),
    ("head_with_data", bytes(range(256)) * 400),  # far more than one read and 16 KiB
    ("byte_by_byte", b"EARLY-WITH-THE-LAST-BYTE-OF-THE-HEAD"),
], ids=["short", "100k", "with-last-byte"])
def test_tunnel_bytes_in_the_head_write_reach_the_client(tpt, scripted, mode, early):
    proxy = scripted(mode, early=early, early_with_last_byte=True)
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert recv_exactly(client, len(early)) == early, "bytes after the head were dropped"
        client.sendall(b"then-echo")
        assert recv_exactly(client, 9) == b"then-echo"

    (rec,) = wait_access(proc)
    assert rec["result"] == "ok", rec
    assert int(rec["bytes_to_client"]) == len(early) + 9
    assert OK_HEAD not in proc.log_text().encode()


@pytest.mark.parametrize("head", [
    b"HTTP/1.0 200 Connection established\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nProxy-Agent: scripted\r\n\r\n",
    # RFC 9110 §9.3.6: a 2xx to CONNECT has no content; these headers must be ignored.
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["http10", "204", "content-length", "chunked"])
def test_any_2xx_head_opens_the_tunnel_and_following_bytes_are_tunnel_data(tpt, scripted, head):
    early = b"0123456789-tunnel-data"
    proxy = scripted("raw", answer=head + early, then="tunnel")
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert recv_exactly(client, len(early)) == early
        client.sendall(b"echo-me")
        assert recv_exactly(client, 7) == b"echo-me"

    (rec,) = wait_access(proc)
    assert rec["result"] == "ok", rec
    assert int(rec["bytes_to_client"]) == len(early) + 7


def test_response_head_over_16k_is_a_protocol_error(tpt, scripted):
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 20000 + b"\r\n\r\n"
    proxy = scripted("raw", answer=head, then="hold")
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_protocol", rec
    assert errors_total(proc, "proxy_protocol") == 1
    assert "ppppppppppppppppppppppppp" not in proc.log_text()


def test_407_logs_only_the_scheme_of_the_challenge(tpt, scripted):
    nonce, realm = "n0nce-0f-the-proxy-6ad1", "corp-realm-5b1e"
    proxy = scripted("raw", answer=(
        "HTTP/1.1 407 Proxy Authentication Required\r\n"
        f'Proxy-Authenticate: Digest realm="{realm}", nonce="{nonce}", qop="auth"\r\n'
        "Content-Length: 0\r\n\r\n").encode())
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_status", rec
    refused = [r for r in log_records(proc) if r.get("msg") == "CONNECT refused"]
    assert refused and refused[0]["proxy_authenticate"] == "Digest", proc.log_text()
    assert "407" in refused[0]["status"]
    assert nonce not in proc.log_text() and realm not in proc.log_text()
    assert_no_secret(proc.log_text())


@pytest.mark.parametrize("reason,result", [
    (b"Forbidden\x1b[2J\x07 by policy", "proxy_(status|protocol)"),  # CTLs: not HTTP
    (b"Verboten \xe9\x9b\xbb\x1b", "proxy_(status|protocol)"),
    (b"Verboten \xe9\x9b\xbb", "proxy_status"),  # obs-text is valid HTTP (RFC 9112 §4)
], ids=["ctl", "obs-text-and-ctl", "obs-text"])
def test_raw_bytes_of_the_status_line_never_reach_the_log(tpt, scripted, reason, result):
    proxy = scripted("raw", answer=b"HTTP/1.1 403 " + reason + b"\r\n\r\n", then="hold")
    text, port = plain_tunnel_config(proxy)
    text = text.replace('log_format: "json"', 'log_format: "txt"')
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    proc.wait_log(r"result=\S*" + result)
    raw = proc.log_path.read_bytes()
    for byte in (b"\x1b", b"\x07", b"\xe9", b"\x9b", b"\xbb"):
        assert byte not in raw, raw
    if result == "proxy_status":
        assert re.search(rb'status="HTTP/1\.1 403 Verboten \?+"', raw), raw


def test_proxy_fin_right_after_the_head_is_a_half_close(tpt, scripted):
    early = b"last-words-before-fin"
    proxy = scripted("raw", answer=OK_HEAD + early, then="half_close")
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
        assert closed and data == early, (closed, data)
        # SPEC §4.6: the FIN from upstream is a half-close, the client->proxy way still flows.
        client.sendall(b"still-flowing")
        client.shutdown(socket.SHUT_WR)
        wait_until(lambda: proxy.all_received()[0].endswith(b"still-flowing"), 10,
                   "client bytes after the proxy's FIN")

    (rec,) = wait_access(proc)
    assert rec["result"] == "ok", rec
    assert int(rec["bytes_to_client"]) == len(early)
    assert int(rec["bytes_to_upstream"]) == len(b"still-flowing")


def test_proxy_port_closed_is_connect_refused(tpt):
    text, port = config({"proxy": f"tcp://127.0.0.1:{free_port()}"},
                        via=auth_via(target="upstream.test:443"))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(python_client_hello("a.example"))
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "connect_refused", rec
    assert errors_total(proc, "connect_refused") == 1


def test_proxy_502_closes_the_client(tpt, scripted):
    proxy = scripted("status:502")
    text, port = config({"proxy": f"tcp://127.0.0.1:{proxy.port}"},
                        via=auth_via(target="upstream.test:443"))
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(python_client_hello("a.example"))
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_status", rec
    assert errors_total(proc, "proxy_status") == 1
    refused = [r for r in log_records(proc) if r.get("msg") == "CONNECT refused"]
    assert refused and "502" in refused[0]["status"], proc.log_text()
    assert "proxy_authenticate" not in refused[0]
    # The hello is tunnel data: it must never reach a proxy that refused the tunnel.
    assert proxy.all_received() == proxy.requests
    assert_no_secret(proc.log_text())


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 Conn"], ids=["silent", "half-head"])
def test_silent_proxy_times_out_at_connect_timeout(tpt, scripted, answer):
    proxy = scripted("raw", answer=answer, then="hold")
    text, port = plain_tunnel_config(proxy, connect_timeout="1s")
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
    elapsed = time.monotonic() - start
    assert closed and data == b"", (closed, data)
    assert 0.8 <= elapsed < 5.0, f"closed after {elapsed:.2f}s with connect_timeout 1s"
    assert len(proxy.requests) == 1, "the CONNECT request was sent before the wait"

    (rec,) = wait_access(proc)
    assert rec["result"] == "connect_timeout", rec
    assert errors_total(proc, "connect_timeout") == 1


@pytest.mark.parametrize("mode", ["garbage", "garbage_close"])
def test_garbage_answer_is_a_protocol_error(tpt, scripted, mode):
    proxy = scripted(mode)
    text, port = plain_tunnel_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    assert rec["result"] == "proxy_protocol", rec
    assert errors_total(proc, "proxy_protocol") == 1
    refused = [r for r in log_records(proc) if r.get("msg") == "CONNECT refused"]
    assert refused and refused[0]["reason"] == "proxy_protocol", proc.log_text()


def sni_target_config(proxy, target_port=8443):
    via = auth_via(use_sni_as_target=True)
    if target_port is not None:
        via["target_port"] = target_port
    return config({"proxy": f"tcp://127.0.0.1:{proxy.port}"}, via=via)


@pytest.mark.parametrize("target_port,expected", [(8443, b"8443"), (None, b"443")],
                         ids=["target_port", "default-443"])
def test_handmade_hello_with_a_valid_sni_is_a_connect_target(tpt, scripted, target_port,
                                                             expected):
    """Also the control for the next test: the hand-built hello is one tpt parses."""
    proxy = scripted("ok")
    text, port = sni_target_config(proxy, target_port)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})
    hello = handmade_client_hello(b"Good-Name.test")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(hello)
        assert recv_exactly(client, len(hello)) == hello

    t = b"good-name.test:" + expected
    assert proxy.requests[0].startswith(b"CONNECT " + t + b" HTTP/1.1\r\nHost: " + t + b"\r\n")
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok" and rec["sni"] == "good-name.test", rec


def test_route_via_replaces_the_server_via_as_a_whole(tpt, scripted):
    proxy = scripted("ok")
    text, port = config(
        {"proxy": f"tcp://127.0.0.1:{proxy.port}"},
        via={"target": "static.test:443", "headers": {"X-Server-Via": "1"}},
        sni={"*.route.test": {"upstream": "proxy",
                              "via": {"use_sni_as_target": True, "target_port": 9443,
                                      "headers": {"X-Route-Via": "2"}}}})
    proc = tpt(text)

    for sni in (b"a.route.test", b"other.test"):
        hello = handmade_client_hello(sni)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(hello)
            assert recv_exactly(client, len(hello)) == hello

    assert proxy.requests == [
        b"CONNECT a.route.test:9443 HTTP/1.1\r\nHost: a.route.test:9443\r\n"
        b"X-Route-Via: 2\r\n\r\n",
        b"CONNECT static.test:443 HTTP/1.1\r\nHost: static.test:443\r\n"
        b"X-Server-Via: 1\r\n\r\n"]
    records = wait_access(proc, 2)
    # Two workers may log the two tunnels' ends in either order.
    assert {r["sni"]: r["route"] for r in records} == {
        "a.route.test": "*.route.test", "other.test": "default"}, records


@pytest.mark.parametrize("bad_sni", [b"bad name.test", b"evil.test\r\nX-Injected: 1",
                                     b"evil.test\r\n\r\nGET / HTTP/1.1", b"evil.test:22",
                                     b"evil\x00.test", b"evil.test/x", b"bad..name.test"])
def test_sni_that_is_not_a_host_name_never_reaches_a_request_line(tpt, scripted, bad_sni):
    proxy = scripted("ok")
    text, port = sni_target_config(proxy)
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(handmade_client_hello(bad_sni))
        data, closed = read_until_closed(client, timeout=10)
    assert closed and data == b"", (closed, data)

    (rec,) = wait_access(proc)
    # No valid SNI and no static target (both together are a config error): close.
    assert rec["result"] == "no_target", rec
    assert rec["sni"] in ("", "-"), rec
    for request in proxy.requests:
        assert not request.startswith(b"CONNECT " + bad_sni), request
    for received in proxy.all_received():
        assert bad_sni not in received, received
    assert proxy.connections == 0, "nothing to CONNECT to: the proxy is not even dialled"


# --- stats_interval ------------------------------------------------------------------------

def test_stats_interval_logs_in_flight_byte_counts(tpt, scripted):
    proxy = scripted("ok")
    text, port = plain_tunnel_config(proxy, stats_interval="1s")
    proc = tpt(text, env={"PROXY_AUTH": GOOD_AUTH})

    def in_flight(count):
        def find():
            return next((r for r in log_records(proc) if "in-flight" in r.get("msg", "")
                         and str(r.get("bytes_to_upstream")) == str(count)), None)
        return wait_until(find, 10.0, f"an in-flight line with bytes_to_upstream={count}")

    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"x" * 1234)
        assert recv_exactly(client, 1234) == b"x" * 1234
        first = in_flight(1234)
        assert str(first["bytes_to_client"]) == "1234", first
        assert first["connect_target"] == "upstream.test:8443", first
        assert first["server"] == SERVER and first["level"] == "info", first

        client.sendall(b"y" * 766)
        assert recv_exactly(client, 766) == b"y" * 766
        later = in_flight(2000)
        assert str(later["bytes_to_client"]) == "2000", later
        assert access_records(proc) == [], "the tunnel is still open"
    (rec,) = wait_access(proc)
    assert rec["result"] == "ok" and int(rec["bytes_to_upstream"]) == 2000, rec
