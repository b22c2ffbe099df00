"""Command line (SPEC §2): options, config search order, --check-config, exit codes, logging."""
import json
import os
import re
import socket
import subprocess

import pytest

from helpers import REPO_ROOT, free_port

CONFIG_DATA = REPO_ROOT / "tests" / "data" / "config"


def run(tpt_bin, *args, env=None, cwd=None, timeout=10):
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    full_env.update(env or {})
    return subprocess.run([str(tpt_bin), *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


def minimal_config(port):
    return f'version: 1\nservers:\n  s:\n    listen: ["127.0.0.1:{port}"]\n    default: echo\n'


def test_version_and_help(tpt_bin):
    r = run(tpt_bin, "--version")
    assert r.returncode == 0 and re.fullmatch(r"tpt \d+\.\d+\.\d+\n", r.stdout)
    for flag in ("-h", "--help"):
        r = run(tpt_bin, flag)
        assert r.returncode == 0
        for opt in ("--config", "--check-config", "--version", "TPT_CONFIG"):
            assert opt in r.stdout


def test_no_arguments_and_no_config_prints_help_and_exits_zero(tpt_bin, tmp_path):
    if any(os.path.exists(p) for p in ("/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml")):
        pytest.skip("this machine has a system-wide tpt config")
    r = run(tpt_bin, cwd=tmp_path)
    assert r.returncode == 0
    assert "--check-config" in r.stdout


def test_no_config_found_lists_the_paths_tried_and_exits_one(tpt_bin, tmp_path):
    if any(os.path.exists(p) for p in ("/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml")):
        pytest.skip("this machine has a system-wide tpt config")
    r = run(tpt_bin, "-t", cwd=tmp_path)
    assert r.returncode == 1
    for path in ("/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml", "tpt.yaml", "config.yaml"):
        assert path in r.stderr


@pytest.mark.parametrize("var", ["TPT_CONFIG", "tpt_CONFIG"])
def test_config_from_environment(tpt_bin, tmp_path, var):
    cfg = tmp_path / "from-env.yaml"
    cfg.write_text(minimal_config(free_port()))
    r = run(tpt_bin, "-t", env={var: str(cfg)}, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "configuration OK\n"


def test_tpt_config_wins_over_lower_case_and_cwd(tpt_bin, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(minimal_config(free_port()))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 9\n")
    (tmp_path / "tpt.yaml").write_text("version: 9\n")
    r = run(tpt_bin, "-t", env={"TPT_CONFIG": str(good), "tpt_CONFIG": str(bad)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["tpt.yaml", "config.yaml"])
def test_config_from_working_directory(tpt_bin, tmp_path, name):
    (tmp_path / name).write_text(minimal_config(free_port()))
    r = run(tpt_bin, "-t", cwd=tmp_path)
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_check_config_never_binds(tpt_bin, tmp_path):
    # The listen port is taken by another socket: -t must still say OK, since it binds nothing.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(minimal_config(port))
        r = run(tpt_bin, "-t", "-c", str(cfg))
        assert r.returncode == 0 and r.stdout == "configuration OK\n"
        # ...while really starting on it fails.
        r = run(tpt_bin, "-c", str(cfg), timeout=20)
        assert r.returncode == 1
        assert f"127.0.0.1:{port}" in r.stderr


def test_seed_readme_example_with_distinct_ports_is_ok(tpt_bin):
    r = run(tpt_bin, "--check-config", "--config", str(CONFIG_DATA / "seed-readme-fixed.yaml"),
            env={"ENCODED_PW": "dXNlcjpwYXNz"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "configuration OK\n"


def test_seed_readme_example_verbatim_names_the_duplicate_listen(tpt_bin):
    r = run(tpt_bin, "-t", "-c", str(CONFIG_DATA / "seed-readme.yaml"),
            env={"ENCODED_PW": "dXNlcjpwYXNz"})
    assert r.returncode == 1
    assert re.search(r"seed-readme\.yaml:\d+: servers\.health-server\.listen\[0\]: duplicate listen",
                     r.stderr), r.stderr


def test_unknown_key_names_file_yaml_path_and_line(tpt_bin, tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text('version: 1\nservers:\n  s:\n    listen: ["127.0.0.1:1"]\n    maxclient: 5\n')
    r = run(tpt_bin, "-t", "-c", str(cfg))
    assert r.returncode == 1
    assert f"{cfg}:5: servers.s.maxclient:" in r.stderr


def test_missing_environment_variable_is_a_load_error_naming_it(tpt_bin, tmp_path):
    cfg = tmp_path / "env.yaml"
    cfg.write_text('version: 1\nservers:\n  s:\n    listen: ["127.0.0.1:1"]\n    default: up\n'
                   'upstream:\n  up: "tcp://${TPT_TEST_UNSET_HOST}:443"\n')
    r = run(tpt_bin, "-t", "-c", str(cfg))
    assert r.returncode == 1
    assert "upstream.up" in r.stderr and "TPT_TEST_UNSET_HOST" in r.stderr
    r = run(tpt_bin, "-t", "-c", str(cfg), env={"TPT_TEST_UNSET_HOST": "example.com"})
    assert r.returncode == 0


def test_unreadable_config_and_unknown_option(tpt_bin, tmp_path):
    r = run(tpt_bin, "-t", "-c", str(tmp_path / "absent.yaml"))
    assert r.returncode == 1 and "absent.yaml" in r.stderr
    r = run(tpt_bin, "--frobnicate")
    assert r.returncode == 2 and "frobnicate" in r.stderr


def test_tpt_log_overrides_config_level_and_json_format(tpt, tmp_path):
    admin = free_port()
    text = (f'version: 2\nlog: off\nlog_format: json\nadmin:\n  listen: "127.0.0.1:{admin}"\n'
            f'servers:\n  s:\n    listen: ["127.0.0.1:{free_port()}"]\n    default: echo\n')
    quiet = tpt(text)
    assert "tpt started" not in quiet.log_text()
    loud = tpt(text.replace(f"127.0.0.1:{admin}", f"127.0.0.1:{free_port()}"),
               env={"TPT_LOG": "info"})
    line = loud.wait_log(r'\{.*"msg":"tpt started".*\}').group(0)
    record = json.loads(line)
    assert record["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", record["ts"])
