"""The observability bundle: Prometheus alert rules, their promtool unit tests, the Grafana
dashboard, the runbook, the kustomize and Helm renderings, and, against a real Prometheus
scraping a running tpt, every dashboard and alert expression."""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess

import pytest
import yaml

from helpers import (REPO_ROOT, EchoUpstream, free_port, http_request, metric_value,
                     wait_until)
from prometheus_server import PrometheusServer

OBS = REPO_ROOT / "deploy" / "observability"
RULES = OBS / "tpt-alerts.yaml"
RULE_TESTS = OBS / "tpt-alerts.test.yaml"
DASHBOARD = OBS / "tpt-dashboard.json"
PROMETHEUS_RULE = OBS / "tpt-prometheusrule.yaml"
HELM_CHART = REPO_ROOT / "helm"
RUNBOOK = REPO_ROOT / "README.md"  # the runbook is a section of the README
RUNBOOK_URL = "https://github.com/tpt-proxy/tpt#runbook-{}"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's interval variables and the values the tests give them.
INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "5m"}
TEMPLATE_VARS = ("namespace", "pod", "server", "route")


# ---- reading the artefacts -----------------------------------------------------------------

def load_rules():
    return yaml.safe_load(RULES.read_text())


def alert_rules(groups=None):
    groups = load_rules()["groups"] if groups is None else groups
    return [r for g in groups for r in g["rules"] if "alert" in r]


def alert_names():
    return [r["alert"] for r in alert_rules()]


def load_dashboard():
    return json.loads(DASHBOARD.read_text())


def _walk_panels(panels):
    for p in panels:
        yield p
        yield from _walk_panels(p.get("panels", []))


def dashboard_panels(dash=None):
    return list(_walk_panels((dash or load_dashboard())["panels"]))


def dashboard_targets(dash=None):
    """(where, expr) of every panel query."""
    out = []
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    return out


def dashboard_annotation_exprs(dash=None):
    dash = dash or load_dashboard()
    return [(f"annotation {a['name']!r}", a["expr"]) for a in dash["annotations"]["list"]
            if "expr" in a]


def all_exprs_in(obj):
    """Every value of an `expr` key anywhere in the JSON: nothing escapes the checks."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from all_exprs_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_exprs_in(v)


def query_variables(dash=None):
    """{name: (selector, label)} of the label_values() template variables."""
    out = {}
    for v in (dash or load_dashboard())["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q, re.S)
        assert m, f"variable {v['name']}: not a label_values() query: {q}"
        out[v["name"]] = (m.group(1), m.group(2))
    return out


def substitute(expr):
    """The PromQL Grafana sends with every variable at "All" (allValue .*)."""
    for name, value in INTERVALS.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", ".*", expr)
    assert "$" not in expr, expr
    return expr


def github_slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def run(cmd, cwd=None, timeout=120):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# ---- rules: promtool, content, runbook -----------------------------------------------------

EXPECTED_ALERTS = {"TptConfigReloadFailing", "TptNearMaxClients", "TptAtMaxClients",
                   "TptConnectionsRejected", "TptRouteErrorRatioHigh",
                   "TptUpstreamConnectLatencyHigh", "TptTargetDown",
                   "TptUpstreamMemberDown"}


def test_promtool_check_rules():
    r = run(["promtool", "check", "rules", RULES])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout, r.stdout


def test_rules_define_the_expected_alerts_with_annotations():
    names = alert_names()
    assert len(names) == len(set(names)), names
    assert set(names) == EXPECTED_ALERTS
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        assert ann["runbook_url"] == RUNBOOK_URL.format(name.lower()), name


def test_promtool_unit_tests_pass_and_cover_every_alert():
    r = run(["promtool", "test", "rules", RULE_TESTS.name], cwd=OBS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout

    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alert_names())
    assert names - fires == set(), f"alerts never shown firing: {names - fires}"
    assert names - silent == set(), f"alerts never shown silent: {names - silent}"
    assert fires | silent <= names, f"tests of unknown alerts: {(fires | silent) - names}"


def test_runbook_has_a_section_per_alert():
    text = RUNBOOK.read_text()
    sections = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^#{2,4}\s+(.*)$", line)
        if m:
            current = github_slug(m.group(1))
            sections[current] = []
        elif current:
            sections[current].append(line)
    for name in alert_names():
        anchor = "runbook-" + name.lower()
        assert anchor in sections, f"README.md has no heading with anchor #{anchor}"
        body = "\n".join(sections[anchor])
        for part in ("Meaning", "Impact", "Diagnosis", "Fix"):
            assert f"**{part}.**" in body, f"{name}: runbook section lacks {part}"
    # The dashboard's link goes to the runbook's top.
    assert "runbook" in sections


# ---- dashboard: structure ------------------------------------------------------------------

def test_dashboard_structure():
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    qv = query_variables(dash)
    assert set(TEMPLATE_VARS) <= set(qv), qv
    for name in TEMPLATE_VARS:
        v = variables[name]
        assert v["datasource"] == DS_REF, name
        assert v["includeAll"] and v["allValue"] == ".*", name

    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for p in panels:
        if p["type"] == "row":
            continue
        assert p.get("datasource") == DS_REF, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("datasource", DS_REF) == DS_REF, p["title"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == DS_REF

    # No expression hides outside panels' targets, annotations and variables.
    found = sorted(all_exprs_in(dash))
    listed = sorted(e for _, e in dashboard_targets(dash) + dashboard_annotation_exprs(dash))
    assert found == listed


def test_dashboard_covers_the_spec_metrics_and_honours_the_variables():
    exprs = [e for _, e in dashboard_targets()]
    text = "\n".join(exprs)
    for metric in ("tpt_route_connections_total", "tpt_route_active_connections",
                   "tpt_active_connections", "tpt_maxclients", "tpt_route_bytes_total",
                   "tpt_route_errors_total", "tpt_upstream_connect_duration_seconds_bucket",
                   "tpt_maxclients_rejected_total", "tpt_config_reloads_total",
                   "tpt_config_last_reload_successful", "tpt_config_info",
                   "tpt_config_last_reload_success_timestamp_seconds", "tpt_build_info",
                   "process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "tpt_upstream_member_up",
                   "tpt_upstream_member_connections_total", "tpt_upstream_member_failures_total"):
        assert re.search(rf"\b{metric}\b", text), f"no panel shows {metric}"
    assert re.search(r"histogram_quantile\(\s*0\.99\s*,.*tpt_upstream_connect_duration_seconds"
                     r"_bucket", text, re.S)
    assert "sum by (direction)" in text
    # Every selector of a metric is narrowed by namespace and pod, and the route metrics by
    # server and route (tpt_active_connections & co. name the server `name`).
    for where, expr in dashboard_targets():
        for m in re.finditer(r"\b((?:tpt|process)_\w+)\{([^}]*)\}", expr):
            metric, sel = m.groups()
            assert 'namespace=~"$namespace"' in sel and 'pod=~"$pod"' in sel, (where, metric)
            if metric.startswith("tpt_route_") or (metric.startswith("tpt_upstream_") and
                                                   not metric.startswith("tpt_upstream_member_")):
                assert 'server=~"$server"' in sel and 'route=~"$route"' in sel, (where, metric)
            if metric in ("tpt_active_connections", "tpt_maxclients",
                          "tpt_maxclients_rejected_total"):
                assert 'name=~"$server"' in sel, (where, metric)


def test_every_expression_parses_in_prometheus(tmp_path):
    """Parsing only (no tpt needed): dashboard queries, variables, annotations, alert rules."""
    exprs = dashboard_targets() + dashboard_annotation_exprs()
    exprs += [(f"variable {n}", sel) for n, (sel, _) in query_variables().items()]
    exprs += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    with PrometheusServer([], tmp_path / "prom") as prom:
        errors = []
        for where, expr in exprs:
            answer = prom.query_raw(substitute(expr))
            if answer.get("status") != "success":
                errors.append(f"{where}: {answer.get('error')}")
        assert not errors, "\n".join(errors)


# ---- copies, kustomize, helm ---------------------------------------------------------------

def test_helm_copies_are_identical_to_the_sources():
    for name in ("tpt-alerts.yaml", "tpt-dashboard.json"):
        copy = HELM_CHART / "files" / name
        assert copy.read_bytes() == (OBS / name).read_bytes(), \
            f"helm/files/{name} differs from deploy/observability/{name}: " \
            "run deploy/observability/sync.py"
    r = run(["/usr/bin/python3", OBS / "sync.py", "--check"])
    assert r.returncode == 0, r.stderr + "run deploy/observability/sync.py"
    wrapped = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert wrapped["kind"] == "PrometheusRule"
    assert wrapped["spec"]["groups"] == load_rules()["groups"]


def _check_rule_groups(groups, tmp_path, extra_labels=None):
    """groups equal the source's (plus extra labels under each rule's own) and load in
    promtool."""
    want = load_rules()["groups"]
    if extra_labels:
        for g in want:
            for r in g["rules"]:
                r["labels"] = {**extra_labels, **r.get("labels", {})}
    assert groups == want
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    r = run(["promtool", "check", "rules", path])
    assert r.returncode == 0, r.stdout + r.stderr


def _dashboard_configmaps(docs):
    return [d for d in docs if d.get("kind") == "ConfigMap"
            and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_kustomize_renders_the_dashboard_configmap_and_prometheusrule(tmp_path):
    r = run(["kubectl", "kustomize", OBS])
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PrometheusRule"]
    (cm,) = _dashboard_configmaps(docs)
    assert cm["metadata"]["name"] == "tpt-dashboard"  # no hash suffix
    assert json.loads(cm["data"]["tpt-dashboard.json"]) == load_dashboard()
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    _check_rule_groups(rule["spec"]["groups"], tmp_path)


def _helm():
    script = REPO_ROOT / "scripts" / "helm.sh"
    assert script.exists(), "scripts/helm.sh is missing"
    r = run([script], timeout=300)
    assert r.returncode == 0, f"scripts/helm.sh failed: {r.stderr}"
    return r.stdout.strip().splitlines()[-1]


def _helm_template(*sets):
    args = [_helm(), "template", "obs", HELM_CHART, "--namespace", "obs-test"]
    for s in sets:
        args += ["--set", s]
    r = run(args)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_helm_renders_prometheusrule_and_dashboard_when_enabled(tmp_path):
    docs = _helm_template("prometheusRule.enabled=true", "grafanaDashboard.enabled=true",
                          "prometheusRule.labels.release=kps",
                          "prometheusRule.additionalRuleLabels.team=network",
                          "prometheusRule.additionalRuleLabels.severity=ignored",
                          "grafanaDashboard.annotations.grafana_folder=Proxies")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "obs-test"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "obs"
    # additionalRuleLabels reach every rule; a rule's own severity wins.
    _check_rule_groups(rule["spec"]["groups"], tmp_path,
                       {"team": "network", "severity": "ignored"})

    (cm,) = _dashboard_configmaps(docs)
    assert cm["metadata"]["namespace"] == "obs-test"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Proxies"}
    (key,) = cm["data"]
    assert key.endswith(".json")
    assert json.loads(cm["data"][key]) == load_dashboard()


def test_helm_renders_neither_by_default():
    docs = _helm_template()
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
    assert not _dashboard_configmaps(docs)


# ---- live: tpt + a real Prometheus ---------------------------------------------------------

def client_hello(sni):
    """The bytes of a real TLS ClientHello with server_name sni (from Python's ssl)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # waiting for the ServerHello: the ClientHello is out
        return outgoing.read()
    raise AssertionError("handshake finished without a server")


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


def echo_session(port, payloads):
    """Through tpt to the echo upstream and back; ends with a clean half-close each way."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for p in payloads:
            s.sendall(p)
            assert recv_exact(s, len(p)) == p
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""


def open_tunnel(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hold")
    assert recv_exact(s, 4) == b"hold"
    return s


def expect_closed_by_tpt(port):
    """tpt accepts, then closes without a byte (maxclients, or the upstream refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(b"x")
            data = s.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return
        assert data == b"", f"got {data!r} from port {port}"


LIVE_CONFIG = """\
version: 2
log: info
admin:
  listen: "127.0.0.1:{admin}"
reload:
  watch: true
  poll_interval: 0s
servers:
  web:
    listen: ["127.0.0.1:{web}"]
    tls: true
    sni:
      echo.test: py_echo
      "*.wild.test": py_echo
    default: py_echo
    client_hello_timeout: 5s
  refused:
    listen: ["127.0.0.1:{refused}"]
    default: dead
  limited:
    listen: ["127.0.0.1:{limited}", "127.0.0.1:{limited2}"]
    default: py_echo
    maxclients: 2
upstream:
  py_echo: "tcp://127.0.0.1:{echo}"
  dead: {{servers: ["tcp://127.0.0.1:{dead}"], health: {{fail_after: 1}}}}
"""

# Alert expressions that the live traffic makes true (with the `for` still to come), and
# those that must stay empty while tpt runs.
LIVE_ALERTS_TRUE = {"TptConfigReloadFailing", "TptNearMaxClients", "TptAtMaxClients",
                    "TptConnectionsRejected", "TptRouteErrorRatioHigh",
                    "TptUpstreamMemberDown"}
LIVE_ALERTS_EMPTY = {"TptUpstreamConnectLatencyHigh", "TptTargetDown"}


def write_atomically(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def echo_upstream():
    up = EchoUpstream()
    yield up
    up.close()


def test_live_dashboard_and_alert_queries_against_prometheus(tpt, echo_upstream, tmp_path):
    assert LIVE_ALERTS_TRUE | LIVE_ALERTS_EMPTY == set(alert_names())
    ports = {k: free_port() for k in ("admin", "web", "refused", "limited", "limited2", "dead")}
    config = LIVE_CONFIG.format(echo=echo_upstream.port, **ports)
    proc = tpt(config)
    admin_addr = proc.admin.removeprefix("http://")
    rules_copy = tmp_path / "tpt-alerts.yaml"
    shutil.copy(RULES, rules_copy)
    held = []
    prom = PrometheusServer([(admin_addr, {"namespace": "e2e", "pod": "tpt-0"})],
                            tmp_path / "prom", job="tpt", rule_files=[rules_copy])
    try:
        prom.start()
        prom.wait_target_up(timeout=30)

        def metric(name, labels=None):
            return metric_value(proc.metrics(), name, labels)

        def traffic_round():
            for sni in ("echo.test", "a.wild.test", "unknown.example"):
                echo_session(ports["web"], [client_hello(sni), b"ping" * 100])
            for _ in range(2):
                expect_closed_by_tpt(ports["refused"])
            # maxclients counts the server's tunnels on both its addresses: both are full.
            expect_closed_by_tpt(ports["limited"])
            expect_closed_by_tpt(ports["limited2"])

        # Round 1: a good reload, held tunnels on `limited`, then every kind of traffic.
        write_atomically(proc.config_path, config + "# reloaded once\n")
        status, _, body = http_request(proc.admin + "/reload", "POST")
        assert status == 200, body
        wait_until(lambda: (metric("tpt_config_reloads_total", {"result": "success"}) or 0) >= 1,
                   10, "a successful reload counted")
        held += [open_tunnel(ports["limited"]), open_tunnel(ports["limited2"])]
        traffic_round()
        # Counters need two scrapes that differ for rate() > 0: let Prometheus see round 1.
        for sel in ('tpt_maxclients_rejected_total{name="limited"}',
                    'tpt_route_errors_total{server="refused"}',
                    'tpt_route_connections_total{server="web"}'):
            prom.wait_for_data(sel, timeout=20)

        # Round 2: the same again, then a reload that fails.
        traffic_round()
        write_atomically(proc.config_path, config.replace("version: 2", "version: 3"))
        status, _, body = http_request(proc.admin + "/reload", "POST")
        assert status in (400, 500), (status, body)
        for sel in ('increase(tpt_maxclients_rejected_total{name="limited"}[1m]) > 0',
                    'increase(tpt_route_errors_total{server="refused"}[1m]) > 0',
                    "tpt_config_last_reload_successful == 0"):
            prom.wait_for_data(sel, timeout=20)

        # Every dashboard query parses and, after that traffic, returns data.
        targets = dashboard_targets()
        pending = dict(targets)

        def all_have_data():
            for where, expr in list(pending.items()):
                if prom.samples(substitute(expr)):  # raises on a parse error
                    del pending[where]
            return not pending
        try:
            wait_until(all_have_data, 30, "data for every dashboard query")
        except AssertionError:
            raise AssertionError("dashboard queries without data:\n" + "\n".join(
                f"{w}: {substitute(e)}" for w, e in pending.items())) from None
        for where, expr in dashboard_annotation_exprs():
            prom.query(substitute(expr))  # parses

        # The template variables list what the traffic created.
        values = {}
        for name, (sel, label) in query_variables().items():
            values[name] = {s[0].get(label) for s in
                            prom.samples(f"count by ({label}) ({substitute(sel)})")}
        assert values["namespace"] == {"e2e"}
        assert values["pod"] == {"tpt-0"}
        assert values["server"] >= {"web", "refused", "limited"}
        assert values["route"] >= {"echo.test", "*.wild.test", "default"}

        # Alert expressions: true where the traffic made them so, empty elsewhere.
        exprs = {r["alert"]: r["expr"] for r in alert_rules()}
        for name in sorted(LIVE_ALERTS_TRUE):
            prom.wait_for_data(exprs[name], timeout=20)
        for name in sorted(LIVE_ALERTS_EMPTY):
            assert prom.samples(exprs[name]) == [], name
        ratio = prom.samples(exprs["TptRouteErrorRatioHigh"])
        assert {(s[0]["server"], s[0]["route"], s[0]["reason"]) for s in ratio} == \
            {("refused", "default", "connect_refused")}
        near = prom.samples(exprs["TptNearMaxClients"])
        assert {s[0]["name"] for s in near} == {"limited"}

        # Prometheus itself loads the rule file and evaluates every rule without error, and
        # the true ones become pending (their `for` is minutes).
        def rules_healthy():
            rules = [r for g in prom.rules() for r in g["rules"]]
            assert len(rules) == len(alert_names())
            bad = [(r["name"], r["health"], r.get("lastError")) for r in rules
                   if r["health"] != "ok"]
            assert not [b for b in bad if b[1] == "err"], bad
            return not bad
        wait_until(rules_healthy, 20, "every rule evaluated with health ok")

        def alerts_active():
            return {a["labels"]["alertname"] for a in prom.alerts()} >= LIVE_ALERTS_TRUE
        wait_until(alerts_active, 20, f"alerts {sorted(LIVE_ALERTS_TRUE)} pending")
        active = {a["labels"]["alertname"] for a in prom.alerts()}
        assert not active & LIVE_ALERTS_EMPTY, active

        # Down: TptTargetDown's expression becomes true once tpt stops answering.
        for s in held:
            s.close()
        held.clear()
        proc.stop()
        prom.wait_for_data(exprs["TptTargetDown"], timeout=20)
    finally:
        for s in held:
            s.close()
        prom.stop()
