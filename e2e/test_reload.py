"""Hot reload (SPEC §7) and shutdown (SPEC §8), black-box against the real binary."""
import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import free_port, http_request, metric_value, wait_until


def admin_port_block(port):
    return f'admin:\n  listen: "127.0.0.1:{port}"\n'


def echo_config(admin, servers, extra=""):
    """servers: {name: (port, upstream)}."""
    text = f"version: 2\nlog: info\n{admin_port_block(admin)}{extra}servers:\n"
    for name, (port, upstream) in servers.items():
        text += f'  {name}:\n    listen: ["127.0.0.1:{port}"]\n    default: {upstream}\n'
    return text


def echo_roundtrip(port, payload=b"ping\n", timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk


def banned(port):
    """True when the listener accepts and closes without a byte (FIN or, with our unread
    request, RST)."""
    try:
        return echo_roundtrip(port) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError as exc:  # ENOTCONN from shutdown() once the RST has arrived
        return exc.errno == 107


def reload_counts(proc):
    text = proc.metrics()
    return (metric_value(text, "tpt_config_reloads_total", {"result": "success"}) or 0,
            metric_value(text, "tpt_config_reloads_total", {"result": "failure"}) or 0)


def config_sha(proc):
    status, _, body = http_request(proc.admin + "/config")
    assert status == 200
    import json
    return json.loads(body)["sha256"]


class ConfigMapDir:
    """The kubelet's atomic writer layout: ..<ts>/config.yaml, ..data -> ..<ts>,
    config.yaml -> ..data/config.yaml; an update writes a new ..<ts> dir, points ..data_tmp at it,
    renames ..data_tmp over ..data and deletes the old dir."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = 0
        self.current = None

    @property
    def path(self):
        return self.root / "config.yaml"

    def write(self, text):
        self.generation += 1
        ts = self.root / f"..2026_11_25_10_00_{self.generation:02d}.{os.getpid()}"
        ts.mkdir()
        (ts / "config.yaml").write_text(text)
        tmp = self.root / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(ts.name, tmp)
        os.rename(tmp, self.root / "..data")
        if not self.path.is_symlink():
            os.symlink("..data/config.yaml", self.path)
        if self.current is not None:
            (self.current / "config.yaml").unlink()
            self.current.rmdir()
        self.current = ts


def start_in_configmap(tpt_bin, tmp_path, text):
    """Starts tpt on a ConfigMap-style directory; returns (TptProcess-like, ConfigMapDir)."""
    from helpers import TptProcess
    cm = ConfigMapDir(tmp_path / "etc-tpt")
    cm.write(text)
    proc = TptProcess(tpt_bin, text, workdir=tmp_path / "run", ready=False)
    # TptProcess wrote its own copy; restart it on the ConfigMap path instead.
    proc.popen.kill()
    proc.popen.wait()
    proc._log.close()
    proc2 = TptProcess.__new__(TptProcess)
    proc2.__dict__.update(proc.__dict__)
    import subprocess
    proc2._log = open(proc2.log_path, "wb")
    proc2.config_path = cm.path
    proc2.popen = subprocess.Popen([str(tpt_bin), "-c", str(cm.path)], stdout=proc2._log,
                                   stderr=subprocess.STDOUT, cwd=proc2.dir)
    proc2.wait_ready()
    return proc2, cm


@pytest.fixture
def configmap_tpt(tpt_bin, tmp_path):
    started = []

    def start(text):
        (tmp_path / "run").mkdir(exist_ok=True)
        proc, cm = start_in_configmap(tpt_bin, tmp_path, text)
        started.append(proc)
        return proc, cm

    yield start
    for p in started:
        p.stop()


def test_configmap_symlink_swaps_are_live_within_one_second(configmap_tpt):
    admin = free_port()
    base = free_port()
    servers = {"base": (base, "echo")}
    proc, cm = configmap_tpt(echo_config(admin, servers))
    assert echo_roundtrip(base) == b"ping\n"
    for i in range(10):
        port = free_port()
        servers = {"base": (base, "echo"), f"gen{i}": (port, "echo")}
        text = echo_config(admin, servers)
        t0 = time.monotonic()
        cm.write(text)
        want = hashlib.sha256(text.encode()).hexdigest()
        wait_until(lambda: config_sha(proc) == want, 1.0, f"update {i} live")
        got = echo_roundtrip(port, payload=f"gen{i}".encode())
        assert got == f"gen{i}".encode()
        assert time.monotonic() - t0 < 1.5
        # the listener of the previous generation is gone
    success, failure = reload_counts(proc)
    assert success == 10 and failure == 0
    assert "subPath" not in proc.log_text()


def test_write_in_place_and_rename_over_both_reload(tpt):
    admin, p1, p2 = free_port(), free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")}))
    # write in place
    proc.config_path.write_text(echo_config(admin, {"a": (p1, "echo"), "b": (p2, "echo")}))
    wait_until(lambda: reload_counts(proc)[0] == 1, 1.0, "in-place write reloaded")
    assert echo_roundtrip(p2) == b"ping\n"
    # rename over (what editors do)
    tmp = proc.config_path.with_suffix(".swp")
    tmp.write_text(echo_config(admin, {"a": (p1, "ban")}))
    os.rename(tmp, proc.config_path)
    wait_until(lambda: reload_counts(proc)[0] == 2, 1.0, "rename-over reloaded")
    assert banned(p1)
    with pytest.raises(OSError):
        echo_roundtrip(p2)


def test_touch_without_change_does_not_reload(tpt):
    admin, p1 = free_port(), free_port()
    text = echo_config(admin, {"a": (p1, "echo")})
    proc = tpt(text)
    os.utime(proc.config_path)
    proc.config_path.write_text(text)  # same bytes written again
    # A real change afterwards: events are handled in order, so once it is counted, the touch
    # and the identical write were handled before it.
    proc.config_path.write_text(text + "# changed\n")
    wait_until(lambda: reload_counts(proc)[0] >= 1, 2.0, "real change reloaded")
    assert reload_counts(proc) == (1, 0)


def test_invalid_config_keeps_old_routes_and_is_counted(tpt):
    admin, p1, p2 = free_port(), free_port(), free_port()
    good = echo_config(admin, {"a": (p1, "echo")})
    proc = tpt(good)
    proc.config_path.write_text(good.replace("default: echo", "default: nope") +
                                f'  b:\n    listen: ["127.0.0.1:{p2}"]\n    default: echo\n')
    wait_until(lambda: reload_counts(proc)[1] == 1, 2.0, "failure counted")
    text = proc.metrics()
    assert metric_value(text, "tpt_config_last_reload_successful") == 0
    assert echo_roundtrip(p1) == b"ping\n"  # the old config still serves
    with pytest.raises(OSError):
        echo_roundtrip(p2)  # nothing of the invalid config was applied
    log = proc.log_text()
    assert "servers.a.default" in log and "nope" in log
    proc.config_path.write_text(good.replace("echo", "echo") + "# fixed\n")
    wait_until(lambda: reload_counts(proc)[0] == 1, 2.0, "fixed config reloaded")
    assert metric_value(proc.metrics(), "tpt_config_last_reload_successful") == 1


def test_sighup_and_post_reload_each_reload(tpt):
    admin, p1 = free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")}) .replace("info", "info\nreload:\n  watch: false\n  poll_interval: 0s"))
    proc.signal(signal.SIGHUP)
    wait_until(lambda: reload_counts(proc)[0] == 1, 2.0, "SIGHUP reload")
    status, _, body = http_request(proc.admin + "/reload", method="POST")
    assert status == 200
    assert body.decode().strip() == hashlib.sha256(proc.config_path.read_bytes()).hexdigest()
    assert reload_counts(proc)[0] == 2
    # an invalid file: 400 with the error, nothing changes
    proc.config_path.write_text("version: 3\n")
    status, _, body = http_request(proc.admin + "/reload", method="POST")
    assert status == 400 and b"version" in body
    assert echo_roundtrip(p1) == b"ping\n"


def test_bind_failure_of_added_address_fails_the_whole_reload(tpt):
    admin, p1, p2, p3 = free_port(), free_port(), free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")}))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", p3))
    blocker.listen()
    try:
        proc.config_path.write_text(
            echo_config(admin, {"a": (p1, "ban"), "b": (p2, "echo"), "c": (p3, "echo")}))
        wait_until(lambda: reload_counts(proc)[1] == 1, 2.0, "bind failure counted")
        assert echo_roundtrip(p1) == b"ping\n"  # a is still echo: nothing changed
        with pytest.raises(OSError):
            echo_roundtrip(p2)
        assert f"127.0.0.1:{p3}" in proc.log_text()
    finally:
        blocker.close()


class LoadLoop(threading.Thread):
    """Opens, uses and closes connections without pause; counts every failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failures = []
        self.stop_flag = threading.Event()

    def run(self):
        n = 0
        while not self.stop_flag.is_set() and n < 200000:
            n += 1
            payload = os.urandom(64)
            try:
                got = echo_roundtrip(self.port, payload, timeout=5.0)
                if got != payload:
                    self.failures.append(f"short echo {len(got)}")
                else:
                    self.ok += 1
            except OSError as exc:
                self.failures.append(repr(exc))


@pytest.mark.concurrency
def test_fifty_reloads_under_load_refuse_nothing_and_keep_old_tunnels(tpt):
    admin, stable = free_port(), free_port()
    doomed = free_port()
    extra_ports = [free_port() for _ in range(5)]
    base = {"stable": (stable, "echo"), "doomed": (doomed, "echo")}
    proc = tpt(echo_config(admin, base))

    # A tunnel on a listener (and route) that the first reload removes.
    old = socket.create_connection(("127.0.0.1", doomed), timeout=5)
    old.sendall(b"before")
    assert old.recv(100) == b"before"

    loops = [LoadLoop(stable) for _ in range(4)]
    for lp in loops:
        lp.start()
    try:
        for i in range(50):
            servers = {"stable": (stable, "echo")}
            for j, port in enumerate(extra_ports):
                if (i + j) % 2 == 0:
                    servers[f"x{j}"] = (port, "echo" if i % 3 else "ban")
            proc.config_path.write_text(echo_config(admin, servers) + f"# generation {i}\n")
            wait_until(lambda: reload_counts(proc)[0] >= i + 1, 2.0, f"reload {i}")
            # the removed listener is closed, the old tunnel on it still moves data both ways
            old.sendall(f"gen{i}".encode())
            want = f"gen{i}".encode()
            got = b""
            while len(got) < len(want):
                got += old.recv(100)
            assert got == want
    finally:
        for lp in loops:
            lp.stop_flag.set()
        for lp in loops:
            lp.join(30)
    total_ok = sum(lp.ok for lp in loops)
    failures = [f for lp in loops for f in lp.failures]
    assert failures == [], failures[:5]
    assert total_ok > 100
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", doomed), timeout=1).recv(1)
    old.close()
    assert reload_counts(proc) == (50, 0)


@pytest.mark.concurrency
def test_sigterm_drains_open_tunnels_then_exits_zero(tpt):
    admin, p1 = free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")},
                           extra="shutdown:\n  delay: 1s\n  drain_timeout: 30s\n"))
    tunnel = socket.create_connection(("127.0.0.1", p1), timeout=5)
    tunnel.sendall(b"x")
    assert tunnel.recv(10) == b"x"
    proc.signal(signal.SIGTERM)
    wait_until(lambda: http_request(proc.admin + "/ready")[0] == 503, 1.0, "/ready 503")
    # still accepting during shutdown.delay
    assert echo_roundtrip(p1) == b"ping\n"
    # after the delay the listener is closed
    def refused():
        try:
            socket.create_connection(("127.0.0.1", p1), timeout=0.5).close()
            return False
        except OSError:
            return True
    wait_until(refused, 3.0, "listener closed after shutdown.delay")
    # the open tunnel keeps working while draining
    tunnel.sendall(b"still")
    assert tunnel.recv(10) == b"still"
    assert proc.popen.poll() is None
    tunnel.close()
    wait_until(lambda: proc.popen.poll() is not None, 5.0, "exit after drain")
    assert proc.popen.returncode == 0


@pytest.mark.concurrency
def test_drain_timeout_closes_remaining_tunnels(tpt):
    admin, p1 = free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")},
                           extra="shutdown:\n  delay: 0s\n  drain_timeout: 1s\n"))
    tunnel = socket.create_connection(("127.0.0.1", p1), timeout=5)
    tunnel.sendall(b"x")
    assert tunnel.recv(10) == b"x"
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    wait_until(lambda: proc.popen.poll() is not None, 5.0, "exit after drain timeout")
    assert proc.popen.returncode == 0
    assert time.monotonic() - t0 >= 0.9
    tunnel.settimeout(2)
    assert tunnel.recv(10) == b""  # closed by tpt
    assert "result=shutdown" in proc.log_text()


def test_second_sigterm_exits_at_once(tpt):
    admin, p1 = free_port(), free_port()
    proc = tpt(echo_config(admin, {"a": (p1, "echo")},
                           extra="shutdown:\n  delay: 30s\n  drain_timeout: 30s\n"))
    proc.signal(signal.SIGTERM)
    wait_until(lambda: http_request(proc.admin + "/ready")[0] == 503, 1.0, "/ready 503")
    assert proc.popen.poll() is None
    proc.signal(signal.SIGTERM)
    wait_until(lambda: proc.popen.poll() is not None, 2.0, "exit on second SIGTERM")


def test_failed_content_is_not_retried_on_other_events_in_the_directory(tpt):
    admin, p1 = free_port(), free_port()
    good = echo_config(admin, {"a": (p1, "echo")})
    proc = tpt(good)
    proc.config_path.write_text("version: 3\n")
    wait_until(lambda: reload_counts(proc)[1] == 1, 3.0, "failure counted")
    # Unrelated files change beside the config (a log written there, say): no retry.
    for i in range(20):
        (proc.config_path.parent / "neighbour.log").write_text(f"line {i}\n")
    proc.config_path.write_text(good + "# fixed\n")
    wait_until(lambda: reload_counts(proc)[0] == 1, 3.0, "fixed config reloaded")
    assert reload_counts(proc) == (1, 1)
    assert proc.log_text().count("config reload failed") == 1
