"""The soak run (bench/soak.py) as a test: mixed tunnels, a reload every second, RSS and
descriptors sampled. Slow (TPT_SOAK_SECONDS, default 600 s), so not in the default run:
    TPT_SOAK_SECONDS=120 /usr/bin/python3 -m pytest e2e -m slow -s"""
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT


@pytest.mark.slow
@pytest.mark.concurrency
def test_soak_no_corruption_no_leak_no_stuck_tunnel(tpt_bin):
    seconds = float(os.environ.get("TPT_SOAK_SECONDS", "600"))
    run = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "soak.py"),
                          "--seconds", str(seconds), "--tpt", str(tpt_bin)],
                         capture_output=True, text=True, timeout=seconds + 300)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "soak: PASSED" in run.stdout
