"""SPEC §13 against the real binary: upstream pools with failover between two real squids,
round_robin and least_connections spreads, and proxy credentials read from a Secret volume
laid out as the kubelet does, rotated without a restart."""
import base64
import os
import shutil
import socket
import threading
import time

import pytest

from helpers import EchoUpstream, free_port, http_get, metric_value, wait_until
from proxy_peers import Squid

USER = "tpt"
PASSWORD = "Pool-Pw-1-3b9e"
NEW_PASSWORD = "Pool-Pw-2-c07d"


@pytest.fixture
def echoes():
    made = []

    def make(n):
        for _ in range(n):
            made.append(EchoUpstream())
        return made[-n:]

    yield make
    for e in made:
        e.close()


@pytest.fixture
def squids():
    made = []

    def make(**kwargs):
        s = Squid({USER: PASSWORD}, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def roundtrip(port, payload=b"ping", timeout=5.0):
    """One new connection through tpt: payload out, its echo back; True when it came back."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(len(payload) - len(got))
                if not chunk:
                    return False
                got += chunk
            return got == payload
    except OSError:
        return False


def pool_config(port, admin, servers, strategy="failover", health="", via="", log="info"):
    members = ", ".join(f'"tcp://127.0.0.1:{p}"' for p in servers)
    return f"""version: 1
log: {log}
admin:
  listen: "127.0.0.1:{admin}"
servers:
  front:
    listen: ["127.0.0.1:{port}"]
    default: pool
{via}upstream:
  pool:
    servers: [{members}]
    strategy: {strategy}
{health}"""


def secret_volume(root, files):
    """A Secret volume as the kubelet writes it: ..<timestamp>/<files>, ..data -> it, and
    each file a symlink through ..data."""
    root.mkdir(exist_ok=True)
    swap_secret(root, files, first=True)
    for name in files:
        os.symlink(f"..data/{name}", root / name)


def swap_secret(root, files, first=False):
    """The kubelet's update: a new timestamped dir, ..data_tmp renamed over ..data, the old
    dir removed."""
    old = os.readlink(root / "..data") if not first else None
    stamp = root / time.strftime(f"..%Y_%m_%d_%H_%M_%S.{time.monotonic_ns()}")
    stamp.mkdir()
    for name, content in files.items():
        (stamp / name).write_text(content)
    os.symlink(stamp.name, root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")
    if old:
        shutil.rmtree(root / old)


def member_up(proc, port):
    return metric_value(proc.metrics(), "tpt_upstream_member_up",
                        {"upstream": "pool", "member": f"tcp://127.0.0.1:{port}"})


def member_connections(proc, port):
    """Client connections established through a member (probes are not counted)."""
    return metric_value(proc.metrics(), "tpt_upstream_member_connections_total",
                        {"upstream": "pool", "member": f"tcp://127.0.0.1:{port}"}) or 0.0


def member_failures(proc, port):
    text = proc.metrics()
    total = 0.0
    for reason in ("connect_refused", "connect_timeout", "proxy_protocol"):
        v = metric_value(text, "tpt_upstream_member_failures_total",
                         {"upstream": "pool", "member": f"tcp://127.0.0.1:{port}",
                          "reason": reason})
        total += v or 0.0
    return total


def restart_on(squids, port, attempts=5):
    """A squid on the port of one that just exited: its socket may linger a moment."""
    for attempt in range(attempts):
        try:
            return squids(port=port, start_timeout=10.0)
        except AssertionError:
            if attempt == attempts - 1:
                raise
    return None


def squid_lines(squid, since, needle):
    return [line for line in squid.log_since(since) if needle in line]


def test_failover_between_two_squids_loses_no_connection(tpt, squids, echoes, tmp_path):
    (echo,) = echoes(1)
    a, b = squids(), squids()
    creds = tmp_path / "creds"
    secret_volume(creds, {"password": PASSWORD + "\n"})
    port, admin = free_port(), free_port()
    via = (f'    via:\n      target: "127.0.0.1:{echo.port}"\n      connect_timeout: 5s\n'
           f'      auth: {{basic: {{username: {USER}, password_file: "{creds}/password"}}}}\n')
    health = ('    health: {interval: 300ms, timeout: 1s, fail_after: 2, pass_after: 2, '
              f'probe_target: "127.0.0.1:{echo.port}", '
              f'auth: {{basic: {{username: {USER}, password_file: "{creds}/password"}}}}}}\n')
    proc = tpt(pool_config(port, admin, [a.port, b.port], health=health, via=via))
    mark_a = a.log_mark()
    for _ in range(20):
        assert roundtrip(port)
    target = f"127.0.0.1:{echo.port}"
    wait_until(lambda: len(squid_lines(a, mark_a, target)) >= 20, 10, "20 tunnels through A")
    assert member_connections(proc, a.port) == 20
    assert member_connections(proc, b.port) == 0  # failover: B only sees probes while A is up

    # A client loop opening new connections continuously while A is killed.
    results = []
    stop = threading.Event()

    def loop():
        while not stop.is_set() and len(results) < 100000:
            results.append(roundtrip(port))

    client = threading.Thread(target=loop)
    client.start()
    try:
        time.sleep(0.5)  # traffic on A before the kill, by design of the scenario
        a.stop()  # returns once squid A has exited
        failures_at_kill = member_failures(proc, a.port)
        wait_until(lambda: member_up(proc, a.port) == 0, 10, "A marked down")
        n_at_down = len(results)
        # Counted from A's exit to its down mark: the fail_after (2) connections that paid a
        # refused connect before the next member, and at most one probe in between. (While
        # squid shuts down it may still answer some, and a success resets the count.)
        failures_at_down = member_failures(proc, a.port) - failures_at_kill
        time.sleep(1.0)  # the loop keeps going through B
    finally:
        stop.set()
        client.join(30)
    failed = results.count(False)
    print(f"client loop: {len(results)} connections, {failed} failed, "
          f"{n_at_down} done when A was marked down with {failures_at_down:.0f} failures counted after the kill, "
          f"{failures_at_kill:.0f} during squid's shutdown")
    assert failed == 0
    assert failures_at_down <= 3
    assert len(results) > n_at_down  # connections went on after A was down
    assert member_connections(proc, b.port) >= len(results) - n_at_down

    # A comes back on its port: the probes mark it up after pass_after, and it takes traffic.
    restarted = restart_on(squids, a.port)
    mark_r = restarted.log_mark()
    wait_until(lambda: member_up(proc, a.port) == 1, 15, "A marked up again")
    # pass_after (2) probes' CONNECTs went through it: squid logs each as it ends.
    wait_until(lambda: len(squid_lines(restarted, mark_r, target)) >= 2, 10, "2 probes in A")
    through_a, through_b = member_connections(proc, a.port), member_connections(proc, b.port)
    for _ in range(10):
        assert roundtrip(port)
    # failover: A takes the traffic again, B none of it.
    assert member_connections(proc, a.port) == through_a + 10
    assert member_connections(proc, b.port) == through_b
    assert PASSWORD not in proc.log_text()


def test_round_robin_spreads_1000_connections_over_three_members(tpt, echoes):
    members = echoes(3)
    port, admin = free_port(), free_port()
    proc = tpt(pool_config(port, admin, [m.port for m in members], strategy="round_robin"))
    for i in range(1000):
        assert roundtrip(port), f"connection {i}"
    wait_until(lambda: sum(m.count() for m in members) == 1000, 10, "1000 accepted")
    counts = [m.count() for m in members]
    print(f"round_robin over 3 members: {counts}")
    for c in counts:
        assert abs(c - 1000 / 3) <= 1000 / 3 * 0.05, counts
    text = proc.metrics()
    for m in members:
        v = metric_value(text, "tpt_upstream_member_connections_total",
                         {"upstream": "pool", "member": f"tcp://127.0.0.1:{m.port}"})
        assert v == m.count()


def test_least_connections_prefers_the_member_with_fewer_live_tunnels(tpt, echoes):
    x, y = echoes(2)
    port, admin = free_port(), free_port()
    proc = tpt(pool_config(port, admin, [x.port, y.port], strategy="least_connections"))

    def active():
        return metric_value(proc.metrics(), "tpt_active_connections", {"name": "front"})

    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        held.sendall(b"hold")
        assert held.recv(4) == b"hold"
        busy, idle = (x, y) if x.count() == 1 else (y, x)
        assert (busy.count(), idle.count()) == (1, 0)
        # Round-robin would alternate; least_connections sends every short connection to
        # the member without the live tunnel (each one ended before the next starts).
        for i in range(6):
            assert roundtrip(port), f"connection {i}"
            wait_until(lambda: active() == 1, 5, "the short connection ended")
        assert (busy.count(), idle.count()) == (1, 6)
    finally:
        held.close()


def test_rotated_secret_is_used_within_a_second_and_never_shown(tpt, squids, echoes, tmp_path):
    (echo,) = echoes(1)
    # credentialsttl 1 s: squid checks the old password again soon and refuses it then.
    squid = squids(extra_conf="auth_param basic credentialsttl 1 second\n")
    creds = tmp_path / "creds"
    secret_volume(creds, {"password": PASSWORD + "\n", "username": USER + "\n"})
    port, admin = free_port(), free_port()
    via = (f'    via:\n      target: "127.0.0.1:{echo.port}"\n      connect_timeout: 5s\n'
           f'      auth: {{basic: {{username_file: "{creds}/username", '
           f'password_file: "{creds}/password"}}}}\n')
    proc = tpt(pool_config(port, admin, [squid.port], via=via, log="trace"))
    live = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        live.sendall(b"old1")
        assert live.recv(4) == b"old1"
        sha = http_get(f"http://127.0.0.1:{admin}/config")[2]

        squid.set_users({USER: NEW_PASSWORD})
        rotated = time.monotonic()
        swap_secret(creds, {"password": NEW_PASSWORD + "\n", "username": USER + "\n"})
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/config")[2] != sha, 1.0,
                   "the rotated password loaded within 1 s")
        reloaded_after = time.monotonic() - rotated
        # Past squid's credentialsttl the old password is refused: every connection from
        # here on must carry the new one.
        time.sleep(1.2)
        assert all(roundtrip(port) for _ in range(10))
        assert not old_password_accepted(squid.port, echo.port)
        live.sendall(b"old2")  # the tunnel opened with the old credential keeps flowing
        assert live.recv(4) == b"old2"
        print(f"rotated credential loaded {reloaded_after * 1000:.0f} ms after the swap")
    finally:
        live.close()
    config_text = http_get(f"http://127.0.0.1:{admin}/config")[2].decode()
    assert "<redacted>" in config_text
    for where, text in (("log", proc.log_text()), ("/config", config_text),
                        ("/metrics", proc.metrics())):
        for secret in (PASSWORD, NEW_PASSWORD, b64(USER, PASSWORD), b64(USER, NEW_PASSWORD)):
            assert secret not in text, f"a credential leaked into {where}"


def b64(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def old_password_accepted(squid_port, echo_port):
    with socket.create_connection(("127.0.0.1", squid_port), timeout=5) as s:
        s.sendall((f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n"
                   f"Proxy-Authorization: Basic {b64(USER, PASSWORD)}\r\n\r\n").encode())
        head = s.recv(4096)
    return head.startswith(b"HTTP/1.1 200")
