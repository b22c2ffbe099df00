"""pytest fixtures: the built tpt binary, started on temp configs and always stopped."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO_ROOT, TptProcess  # noqa: E402
from tls_peers import Pki  # noqa: E402


def root_netns_tables():
    """The nftables tables of the namespace pytest runs in, or None when they cannot be read
    (not root, no nft)."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return None
    proc = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30)
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def no_rules_leak_into_this_namespace():
    """Capture tests install their rules in namespaces of their own: a table left in the one
    pytest runs in would redirect this machine's own traffic (port 443 to a closed port) and
    charge conntrack to every later benchmark. Fails the session if one appears."""
    before = root_netns_tables()
    yield
    after = root_netns_tables()
    if before is not None and after is not None:
        assert after <= before, f"nftables tables left in the test runner's namespace: " \
                                f"{sorted(after - before)}"


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def tpt_bin():
    path = Path(os.environ.get("TPT_BIN", REPO_ROOT / "build" / "release" / "tpt"))
    assert path.exists(), f"tpt binary not found at {path} (build it or set TPT_BIN)"
    return path


@pytest.fixture
def tpt(tpt_bin, tmp_path):
    """Factory: tpt(config_text, env=None, args=None, ready=True) -> TptProcess."""
    started = []

    def start(config_text, env=None, args=None, ready=True, config_name="tpt.yaml"):
        workdir = tmp_path / f"tpt{len(started)}"
        workdir.mkdir()
        proc = TptProcess(tpt_bin, config_text, env=env, args=args, workdir=workdir,
                          ready=False, config_name=config_name)
        started.append(proc)
        if ready and proc.admin:
            proc.wait_ready()
        return proc

    yield start
    problems = []
    for proc in started:
        proc.stop()
        report = sanitizer_report(proc.log_text())
        if report:
            problems.append(f"{proc.config_path}: {report}")
    if problems:
        pytest.fail("sanitizer reports in tpt's output:\n" + "\n".join(problems))


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def sanitizer_report(log_text):
    """The first sanitizer finding in a log, with some context, or None."""
    for marker in SANITIZER_MARKERS:
        i = log_text.find(marker)
        if i >= 0:
            return log_text[max(0, i - 200):i + 3000]
    return None


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and its server certificates, one per test module."""
    return Pki(tmp_path_factory.mktemp("pki"))
