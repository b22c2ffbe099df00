"""Transparent egress capture end to end (SPEC §11): in a network namespace of its own, the
rules come from `tpt capture --apply`, tpt runs as a non-root UID (the excluded one), the
corporate proxy is a real squid with basic auth, the origins are real TLS and HTTP servers on
127.0.0.5 and fd00::5, and the applications are unmodified clients (curl, Python) running as
another UID that know nothing of any proxy: their HTTPS and HTTP leave through tpt, by SNI or
Host, through squid or directly to where they were going.

The whole module runs inside the namespace: a fixture moves the test process's thread into it
(setns), so every socket, server thread and child process the tests make is there, and moves it
back at the end. squid runs as the same UID as tpt, as a proxy outside the pod would be: the
owner match keeps its connections to port 443 from being captured again."""
import base64
import ctypes
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import (TptProcess, access_records, capture_skip_reason, end_holder, free_port,
                     metric_value, wait_access, wait_until)
from proxy_peers import Squid
from tls_peers import Pki, TlsServer, _ThreadedServer, recv_head

PY = "/usr/bin/python3"
APP_UID = 1000
TPT_USER = "nobody"  # tpt and squid: the UID the rules exclude
LISTENER = 15001
USER = "tpt"
PASSWORD = "Transparent-Squid-Pw-81c3"
NAMES = ["tls-a.test", "web.test", "a.direct.test", "v6.direct.test", "once.direct.test",
         "live.direct.test", "new.direct.test"]

pytestmark = pytest.mark.capture


_SKIP = capture_skip_reason()
if _SKIP:
    pytestmark = [pytest.mark.capture, pytest.mark.skip(reason=_SKIP)]

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Inside:
    """A new network namespace that this thread (and what it starts from now on) lives in
    until leave()."""

    def __init__(self):
        self.holder = subprocess.Popen(
            ["unshare", "-n", "--", PY, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE)
        mine = os.readlink("/proc/self/ns/net")
        wait_until(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine, 10,
                   "the namespace holder to unshare")
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "-6", "addr", "add", "fd00::5/128", "dev", "lo", "nodad"]):
            subprocess.run(cmd, check=True, timeout=30)

    def leave(self):
        _setns(self.home)
        os.close(self.home)
        end_holder(self.holder)


def as_app(*cmd):
    return ["setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups", *cmd]


class HttpOrigin(_ThreadedServer):
    """A plain HTTP origin on host:port answering `origin=<name> host=<Host>`."""

    def __init__(self, name, host, port):
        self.name = name
        super().__init__(host, port=port)

    def serve(self, conn):
        head = recv_head(conn)
        host = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                if line.lower().startswith(b"host:")]
        body = f"origin={self.name} host={host[0].decode() if host else None}".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\nConnection: close\r\n\r\n" + body)
        return head


@pytest.fixture(scope="module")
def world(tpt_bin):
    """The namespace with its rules, origins, squid and tpt; yields a dict of them."""
    inside = Inside()
    made = []
    shared = Path(tempfile.mkdtemp(prefix="tpt-transparent-"))
    os.chmod(shared, 0o755)
    try:
        pki = Pki(shared / "pki")
        os.chmod(shared / "pki", 0o755)
        os.chmod(pki.ca_cert, 0o644)
        w = {"pki": pki}
        w["tls"] = TlsServer(pki, "origin", names=NAMES, host="127.0.0.5", port=443)
        made.append(w["tls"])
        w["tls6"] = TlsServer(pki, "origin6", names=NAMES, host="fd00::5", port=443)
        made.append(w["tls6"])
        w["http"] = HttpOrigin("http-origin", "127.0.0.5", 80)
        made.append(w["http"])
        w["squid"] = Squid({USER: PASSWORD}, hosts=NAMES, run_as=TPT_USER, host_ip="127.0.0.5")
        made.append(w["squid"])
        uid = pwd.getpwnam(TPT_USER).pw_uid
        rules = subprocess.run([tpt_bin, "capture", "--ports", "443,80", "--to", str(LISTENER),
                                "--uid", str(uid), "--apply"], capture_output=True, text=True,
                               timeout=30)
        assert rules.returncode == 0, rules.stdout + rules.stderr
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        workdir = shared / "tpt"
        workdir.mkdir()
        os.chmod(workdir, 0o755)
        tpt = TptProcess(tpt_bin, f"""\
log: info
log_format: json
admin:
  listen: "127.0.0.1:{free_port()}"
servers:
  egress:
    listen: ["127.0.0.1:{LISTENER}", "[::1]:{LISTENER}"]
    transparent: true
    tls: true
    http: true
    client_hello_timeout: 2s
    via:
      use_sni_as_target: true
      connect_timeout: 5s
      headers:
        Proxy-Authorization: "Basic ${{SQUID_AUTH}}"
    default: corp_proxy
    sni:
      "*.direct.test": {{ upstream: original, via: {{}} }}
      "*": corp_proxy
upstream:
  corp_proxy: "tcp://127.0.0.1:{w['squid'].port}"
""", env={"SQUID_AUTH": auth}, workdir=workdir,
                         prefix=["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"])
        made.append(tpt)
        w["tpt"] = tpt
        yield w
        log = tpt.log_text()
        assert PASSWORD not in log and auth not in log
    finally:
        for thing in reversed(made):
            (thing.stop if hasattr(thing, "stop") else thing.close)()
        inside.leave()
        shutil.rmtree(shared, ignore_errors=True)


def curl(world, *args):
    out = subprocess.run(as_app("curl", "-sS", "--max-time", "10", "--noproxy", "*",
                                "--cacert", str(world["pki"].ca_cert), *args),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_tpt_runs_as_the_excluded_uid(world):
    status = Path(f"/proc/{world['tpt'].popen.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(pwd.getpwnam(TPT_USER).pw_uid)


def test_unmodified_curl_https_leaves_through_the_corporate_proxy(world):
    squid = world["squid"]
    mark = squid.log_mark()
    body = curl(world, "--resolve", "tls-a.test:443:127.0.0.5", "https://tls-a.test/")
    assert body == "upstream=origin sni=tls-a.test"
    squid.wait_access("CONNECT tls-a.test:443", mark)
    rec = wait_access(world["tpt"], lambda r: r.get("sni") == "tls-a.test")[-1]
    assert rec["original_dst"] == "127.0.0.5:443"
    assert rec["connect_target"] == "tls-a.test:443"
    assert rec["route"] == "*" and rec["result"] == "ok"


def test_plain_http_on_port_80_is_routed_by_host_through_the_proxy(world):
    squid = world["squid"]
    mark = squid.log_mark()
    body = curl(world, "--resolve", "web.test:80:127.0.0.5", "http://web.test/page")
    assert body == "origin=http-origin host=web.test"
    squid.wait_access("CONNECT web.test:80", mark)
    rec = wait_access(world["tpt"], lambda r: r.get("sni") == "web.test")[-1]
    assert rec["original_dst"] == "127.0.0.5:80" and rec["connect_target"] == "web.test:80"


def test_original_routes_go_directly_to_where_the_app_was_going(world):
    squid = world["squid"]
    mark = squid.log_mark()
    body = curl(world, "--resolve", "a.direct.test:443:127.0.0.5", "https://a.direct.test/")
    assert body == "upstream=origin sni=a.direct.test"
    rec = wait_access(world["tpt"], lambda r: r.get("sni") == "a.direct.test")[-1]
    assert rec["upstream"] == "original" and rec["route"] == "*.direct.test"
    assert rec["original_dst"] == "127.0.0.5:443" and rec["connect_target"] == ""
    assert "direct.test" not in squid.log_since(mark)


def test_ipv6_is_captured_with_its_original_destination(world):
    body = curl(world, "-g", "--resolve", "v6.direct.test:443:[fd00::5]",
                "https://v6.direct.test/")
    assert body == "upstream=origin6 sni=v6.direct.test"
    rec = wait_access(world["tpt"], lambda r: r.get("sni") == "v6.direct.test")[-1]
    assert rec["original_dst"] == "[fd00::5]:443"
    assert rec["client"].startswith("[")  # an IPv6 client, on the [::1] listener


def test_ipv6_through_the_corporate_proxy(world):
    squid = world["squid"]
    mark = squid.log_mark()
    # The app reaches tls-a.test by IPv6; squid resolves the name itself (to 127.0.0.5).
    body = curl(world, "-g", "--resolve", "tls-a.test:443:[fd00::5]", "https://tls-a.test/")
    assert body == "upstream=origin sni=tls-a.test"
    squid.wait_access("CONNECT tls-a.test:443", mark)
    rec = wait_access(world["tpt"], lambda r: r.get("sni") == "tls-a.test" and
                      r.get("original_dst") == "[fd00::5]:443")[-1]
    assert rec["connect_target"] == "tls-a.test:443" and rec["result"] == "ok"


def test_an_original_route_reaches_the_server_exactly_once(world):
    tls, tpt = world["tls"], world["tpt"]
    labels = {"server": "egress", "route": "*.direct.test", "upstream": "original"}
    before_server = tls.accepted
    before_tpt = metric_value(tpt.metrics(), "tpt_route_connections_total", labels) or 0
    accepted_before = len(access_records(tpt))
    assert curl(world, "--resolve", "once.direct.test:443:127.0.0.5",
                "https://once.direct.test/") == "upstream=origin sni=once.direct.test"
    wait_access(tpt, lambda r: r.get("sni") == "once.direct.test")
    assert tls.accepted == before_server + 1  # tpt's own connection was not captured again
    assert metric_value(tpt.metrics(), "tpt_route_connections_total", labels) == before_tpt + 1
    assert len(access_records(tpt)) == accepted_before + 1


LIVE_CLIENT = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(sys.argv[1])
with socket.create_connection(("127.0.0.5", 443), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="live.direct.test") as tls:
        for line in sys.stdin:
            tls.sendall(line.encode())
            got = b""
            while len(got) < len(line):
                got += tls.recv(4096)
            print(got.decode().strip(), flush=True)
"""


def test_reload_changes_new_captured_connections_and_keeps_live_ones(world):
    tpt = world["tpt"]
    live = subprocess.Popen(as_app(PY, "-c", LIVE_CLIENT, str(world["pki"].ca_cert)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    original = tpt.config_path.read_text()
    try:
        live.stdin.write("before\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "before"
        successes = metric_value(tpt.metrics(), "tpt_config_reloads_total",
                                 {"result": "success"}) or 0
        tpt.config_path.write_text(original.replace(
            '"*.direct.test": { upstream: original, via: {} }', '"*.direct.test": ban'))
        wait_until(lambda: (metric_value(tpt.metrics(), "tpt_config_reloads_total",
                                         {"result": "success"}) or 0) > successes, 10,
                   "the reload")
        refused = subprocess.run(
            as_app("curl", "-sS", "--max-time", "10", "--cacert", str(world["pki"].ca_cert),
                   "--resolve", "new.direct.test:443:127.0.0.5", "https://new.direct.test/"),
            capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0  # banned now
        wait_access(tpt, lambda r: r.get("sni") == "new.direct.test" and r["result"] == "ban")
        live.stdin.write("after the reload\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "after the reload"  # the live tunnel flows
    finally:
        live.stdin.close()
        live.wait(20)
        tpt.config_path.write_text(original)
    rec = wait_access(tpt, lambda r: r.get("sni") == "live.direct.test")[-1]
    assert rec["result"] == "ok" and rec["upstream"] == "original"


NO_SNI_CLIENT = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(sys.argv[1])
ctx.check_hostname = False
with socket.create_connection(("127.0.0.5", 443), timeout=10) as raw:
    with ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        print(tls.recv(4096).decode().rsplit("\\r\\n", 1)[-1])
"""


def test_a_hello_without_a_name_asks_the_proxy_for_the_original_address(world):
    squid = world["squid"]
    mark = squid.log_mark()
    out = subprocess.run(as_app(PY, "-c", NO_SNI_CLIENT, str(world["pki"].ca_cert)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "upstream=origin sni=None"
    squid.wait_access("CONNECT 127.0.0.5:443", mark)
    rec = wait_access(world["tpt"], lambda r: r.get("connect_target") == "127.0.0.5:443")[-1]
    assert rec["route"] == "default" and rec["sni"] == ""


NOT_REDIRECTED_CLIENT = """
import socket, sys
hello = bytes.fromhex(sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10) as s:
    s.sendall(hello)
    print(repr(s.recv(4096)))
"""


def test_a_connection_that_was_not_redirected_has_no_original_destination(world):
    from tls_peers import client_hello
    before = metric_value(world["tpt"].metrics(), "tpt_route_errors_total",
                          {"server": "egress", "route": "*", "reason": "no_original_dst"}) or 0
    out = subprocess.run(as_app(PY, "-c", NOT_REDIRECTED_CLIENT, client_hello("tls-a.test").hex(),
                                str(LISTENER)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b''"  # closed without a byte
    rec = wait_access(world["tpt"], lambda r: r.get("result") == "no_original_dst")[-1]
    assert rec["original_dst"] == "" and rec["sni"] == "tls-a.test"
    assert metric_value(world["tpt"].metrics(), "tpt_route_errors_total",
                        {"server": "egress", "route": "*", "reason": "no_original_dst"}) == before + 1


def test_tpts_own_connections_are_not_captured_again(world):
    # Every connection tpt accepted came from an application: had its own connection to
    # 127.0.0.5:443 been redirected back, there would be access lines from tpt's own UID's
    # connections with tpt's listener as the client's destination, and loops.
    records = wait_access(world["tpt"], lambda r: True)
    assert all(r["result"] != "loop" for r in records)
    accepted = metric_value(world["tpt"].metrics(), "tpt_route_connections_total",
                            {"server": "egress", "route": "*.direct.test",
                             "upstream": "original"})
    assert accepted == len([r for r in records if r.get("route") == "*.direct.test" and
                            r.get("upstream") == "original"])
