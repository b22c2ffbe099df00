"""Kubernetes delivery (SPEC §10): the Helm chart (helm/, with every helm/ci/*.yaml values
file), the sidecar example chart (deploy/helm-sidecar-example) and every kustomization
(deploy/base, deploy/overlays/*, deploy/observability) render; every manifest parses as YAML
without a duplicate key and passes a strict Kubernetes schema check (unknown fields
included); the tpt config they carry passes `tpt --check-config`; and the delivery
guarantees hold: ConfigMap mounted as a directory (no subPath anywhere), hot reload by
default (no checksum annotation unless rollOnConfigChange), hardened securityContext,
probes on the named admin port, a grace period longer than shutdown.delay + drain_timeout,
credentials only through env from a Secret. Then what a user meets when installing and
upgrading (the "round two" issue, one test group per defect, each failing on the chart
before it): a pullable default image, routes that can be removed, labels merged as dicts,
an alert that matches the default scraping, strict observability values, a config check
before install/upgrade, existingConfigMap, one scrape mechanism, an admin port for both
address families; and the chart's safety features (NetworkPolicy, anti-affinity, PDB,
monitors' options, the generated parameters table, the published OCI chart). The image's
own checks are in e2e/test_image.py.

Tools: helm and kubectl come from scripts/helm.sh (fetched once into .tools/bin); the npm
packages kubernetes-models and @kubernetes-models/prometheus-operator (the Kubernetes and
Prometheus Operator OpenAPI types) and @bitnami/readme-generator-for-helm come from
scripts/node-tools.sh (installed once into .tools/). e2e/k8s_schema.mjs runs the types'
validators and rejects unknown fields by recording which properties the validators read.
"""
import hashlib
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import http_get

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
SIDECAR_EXAMPLE = REPO / "deploy" / "helm-sidecar-example"
KUSTOMIZATIONS = [REPO / "deploy" / "base"] + sorted(
    p.parent for p in (REPO / "deploy" / "overlays").glob("*/kustomization.yaml"))
OBSERVABILITY = REPO / "deploy" / "observability"
IMAGE_CONFIG = REPO / "deploy" / "image" / "tpt.yaml"
WORKFLOW = REPO / ".github" / "workflows" / "image.yml"
SCHEMA_SCRIPT = Path(__file__).resolve().parent / "k8s_schema.mjs"
TOOL_TIMEOUT = 180

# Environment the rendered configs reference as ${VAR} (what the Secrets would provide).
CONFIG_ENV = {"PROXY_AUTHORIZATION": "Basic dXNlcjpwYXNzd29yZA==", "PROXY_USER": "user"}
# The Secrets of the namespace, for resolving a rendered container's env and laying out its
# Secret volumes like the kubelet.
SECRETS = {("corp-proxy-credentials", "proxy-authorization"): CONFIG_ENV["PROXY_AUTHORIZATION"],
           ("corp-proxy-credentials", "username"): CONFIG_ENV["PROXY_USER"],
           ("corp-proxy-credentials", "password"): "password"}

# label -> how to render it
RENDERS = {f"chart/{p.stem}": ("chart", ["-f", str(p)]) for p in CI_VALUES}
RENDERS.update({
    "parent/classic": ("parent", []),
    "parent/native": ("parent", ["--set", "tpt.sidecar.native=true"]),
    # SPEC §11: the capture init container (and the chart's pass-through transparent server).
    "parent/capture": ("parent", ["--set", "tpt.capture.enabled=true"]),
    "parent/capture-native": ("parent", ["--set", "tpt.capture.enabled=true",
                                         "--set", "tpt.sidecar.native=true"]),
})
RENDERS.update({f"kustomize/{p.name}": ("kustomize", [str(p)]) for p in KUSTOMIZATIONS})
# Chart renders in sidecar mode: a ConfigMap (and monitors) only, no workload of their own.
SIDECAR_MODE = {f"chart/{p.stem}" for p in CI_VALUES
                if (yaml.safe_load(p.read_text()) or {}).get("mode") == "sidecar"}
# Renders that carry no tpt config of their own, validated against the schemas only.
SCHEMA_ONLY = {"kustomize/observability": ("kustomize", [str(OBSERVABILITY)])}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")


def run(cmd, check=True, env=None, cwd=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, env=env, cwd=cwd)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys, as the API server's YAML decoder
    does (PyYAML keeps the last one silently)."""


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate mapping key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_manifests(text, label):
    docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    assert docs, f"{label}: rendered nothing"
    for d in docs:
        assert isinstance(d, dict), f"{label}: a document is not a mapping: {d!r}"
        for key in ("apiVersion", "kind"):
            assert d.get(key), f"{label}: document without {key}: {d}"
        assert d.get("metadata", {}).get("name"), f"{label}: {d['kind']} without a name"
    return docs


def duration_seconds(value):
    """SPEC §3 durations (500ms, 10s, 5m, 1h, 1h30m, bare integers = seconds) in seconds."""
    if isinstance(value, int):
        return float(value)
    text = str(value)
    if re.fullmatch(r"[0-9]+", text):
        return float(text)
    assert re.fullmatch(r"([0-9]+(ms|h|m|s))+", text), f"bad duration {text!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * scale[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", text))


def walk(node, path=""):
    """Yields (path, key, value) for every mapping entry in a parsed document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def is_hook(doc):
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def pod_specs(docs):
    for d in docs:
        if is_hook(d):
            continue
        if d["kind"] in WORKLOAD_KINDS:
            yield d, d["spec"]["template"]
        elif d["kind"] == "Pod":
            yield d, {"metadata": d["metadata"], "spec": d["spec"]}


def is_tpt(container):
    args = container.get("args") or []
    return "--config" in args and any(str(a).startswith("/etc/tpt/") for a in args)


def tpt_containers(spec):
    """(list name, container) of every tpt container of a pod spec."""
    return [(where, c) for where in ("containers", "initContainers")
            for c in spec.get(where) or [] if is_tpt(c)]


def tpt_configs(docs):
    """(ConfigMap name, parsed tpt.yaml, raw text) of every ConfigMap carrying a tpt config,
    the hook's copy for the config check aside."""
    return [(d["metadata"]["name"], yaml.safe_load(d["data"]["tpt.yaml"]), d["data"]["tpt.yaml"])
            for d in docs if d["kind"] == "ConfigMap" and "tpt.yaml" in (d.get("data") or {})
            and not is_hook(d)]


def workloads_with_tpt(docs):
    """(workload, pod template, [(list name, container)]) for each workload running tpt."""
    out = []
    for d, template in pod_specs(docs):
        found = tpt_containers(template["spec"])
        if found:
            out.append((d, template, found))
    return out


def hooks(docs):
    """{kind: document} of the config check's hook objects."""
    return {d["kind"]: d for d in docs if is_hook(d)}


@pytest.fixture(scope="session")
def helm():
    return Path(run(["bash", REPO / "scripts" / "helm.sh", "helm"]).stdout.strip())


@pytest.fixture(scope="session")
def kubectl():
    return Path(run(["bash", REPO / "scripts" / "helm.sh", "kubectl"]).stdout.strip())


@pytest.fixture(scope="session")
def node_modules():
    """The npm packages of scripts/node-tools.sh (installed once into .tools/)."""
    return Path(run(["bash", REPO / "scripts" / "node-tools.sh"]).stdout.strip())


@pytest.fixture(scope="session")
def parent_chart(helm, tmp_path_factory):
    """The sidecar example chart with its file:// dependency built, in a scratch copy that
    keeps the relative layout (deploy/helm-sidecar-example -> ../../helm)."""
    root = tmp_path_factory.mktemp("parent")
    shutil.copytree(CHART, root / "helm", ignore=shutil.ignore_patterns("ci"))
    example = root / "deploy" / SIDECAR_EXAMPLE.name
    shutil.copytree(SIDECAR_EXAMPLE, example, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    run([helm, "dependency", "build", example])
    return example


def render_one(helm, kubectl, parent_chart, how, args):
    if how == "chart":
        return run([helm, "template", "rel", CHART, "--namespace", "tpt-system", *args]).stdout
    if how == "parent":
        return run([helm, "template", "rel", parent_chart, *args]).stdout
    return run([kubectl, "kustomize", *args]).stdout


@pytest.fixture(scope="session")
def renders(helm, kubectl, parent_chart):
    return {label: parse_manifests(render_one(helm, kubectl, parent_chart, how, args), label)
            for label, (how, args) in {**RENDERS, **SCHEMA_ONLY}.items()}


def template(helm, *args):
    """Parsed manifests of `helm template rel helm/ ARGS`."""
    text = run([helm, "template", "rel", CHART, "--namespace", "tpt-system", *args]).stdout
    return parse_manifests(text, " ".join(map(str, args)) or "defaults")


def helm_template_fails(helm, *args):
    proc = run([helm, "template", "rel", CHART, *args], check=False)
    assert proc.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return proc.stderr


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind and not is_hook(d)]


# --- rendering and schemas -------------------------------------------------------------


def test_ci_values_files_and_overlays_exist():
    names = {p.stem for p in CI_VALUES}
    assert {"default-values", "roll-on-config-change-values", "sidecar-values",
            "config-string-values", "existing-configmap-values", "podmonitor-values"} <= names
    assert {p.name for p in KUSTOMIZATIONS} == {"base", "native-sidecar", "corporate-proxy",
                                                "capture"}


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_helm_lint_strict_passes(helm, values):
    out = run([helm, "lint", "--strict", CHART, "-f", values]).stdout
    assert "0 chart(s) failed" in out


def test_sidecar_example_chart_lints(helm, parent_chart):
    run([helm, "lint", "--strict", parent_chart])
    run([helm, "lint", "--strict", parent_chart, "--set", "tpt.sidecar.native=true"])


EXISTING_CONFIGMAP = "chart/existing-configmap-values"


@pytest.mark.parametrize("label", list(RENDERS))
def test_render_parses_and_carries_one_tpt_config(renders, label):
    docs = renders[label]
    configs = tpt_configs(docs)
    want = 0 if label == EXISTING_CONFIGMAP else 1
    assert len(configs) == want, f"{label}: expected {want} tpt ConfigMap, got {configs}"
    kinds = {d["kind"] for d in docs if not is_hook(d)}
    if label not in SIDECAR_MODE:
        assert workloads_with_tpt(docs), f"{label}: no workload runs tpt ({kinds})"
    else:
        assert not kinds & WORKLOAD_KINDS, "sidecar mode renders no workload of its own"


@pytest.mark.parametrize("sets, message", [
    (["--set", "bogus=1"], "Additional property bogus is not allowed"),
    (["--set", "mode=daemonset"], "mode"),
    (["--set", "config.version=3"], "config.version"),
    (["--set", "config.servrs.x.listen=0.0.0.0:1"], "servrs"),
    (["--set", "config.shutdown.delay=5 seconds"], "config.shutdown.delay"),
    (["--set", "securityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    (["--set", "securityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["--set", "rollOnConfigChange=yes"], "rollOnConfigChange"),
    (["--set", "adminPortName=Admin_Port"], "adminPortName"),
    (["--set", "prometheusRule.enable=true"], "Additional property enable is not allowed"),
    (["--set", "grafanaDashboard.enable=true"], "Additional property enable is not allowed"),
    (["--set", "grafanaDashboard.label.x=1"], "Additional property label is not allowed"),
    (["--set", "networkPolicy.allowExternl=false"], "allowExternl"),
    (["--set", "podAntiAffinityPreset=medium"], "podAntiAffinityPreset"),
    (["--set", "podDisruptionBudget.minAvailable=half"], "minAvailable"),
    (["--set", "configCheck.enable=false"], "Additional property enable is not allowed"),
], ids=["unknown-key", "mode", "config-version", "config-typo", "duration",
        "rw-rootfs", "root", "bool", "port-name", "prometheusrule-typo", "dashboard-typo",
        "dashboard-labels-typo", "networkpolicy-typo", "anti-affinity", "pdb", "check-typo"])
def test_values_schema_rejects_bad_values(helm, sets, message):
    err = helm_template_fails(helm, *sets)
    assert "don't meet the specifications of the schema" in err, err
    assert message in err, err


def test_values_schema_rejects_bad_values_on_lint(helm):
    proc = run([helm, "lint", CHART, "--set", "config.log=loud"], check=False)
    assert proc.returncode != 0
    assert "config.log" in proc.stdout + proc.stderr


def validate_k8s(node_modules, docs):
    proc = subprocess.run(["node", str(SCHEMA_SCRIPT), str(node_modules)], input=json.dumps(docs),
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_k8s_validator_rejects_broken_manifests_and_unknown_fields(node_modules):
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {
                  "containers": [{"name": "c", "ports": [{"containerPort": "admin"}]}]}}}}
    missing = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"name": "admin"}]}}
    unknown = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "u", "lables": {"a": "b"}, "labels": {"any/key": "ok"}},
               "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                   "metadata": {"labels": {"a": "b"}},
                   "spec": {"containers": [{"name": "c", "image": "i",
                                            "imagePullPolcy": "Always",
                                            "securityContext": {"readOnlyRootFs": True}}],
                            "tolerations": [{"operator": "Exists", "efect": "NoSchedule"}]}}}}
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "m"},
               "spec": {"selector": {}, "endpoints": [{"port": "admin", "intervl": "30s"}]}}
    results = validate_k8s(node_modules, [broken, missing, unknown, monitor])
    assert any("containerPort" in e for e in results[0]["errors"]), results
    assert any("port" in e for e in results[1]["errors"]), results
    assert sorted(results[2]["errors"]) == [
        "unknown field metadata.lables",
        "unknown field spec.template.spec.containers[0].imagePullPolcy",
        "unknown field spec.template.spec.containers[0].securityContext.readOnlyRootFs",
        "unknown field spec.template.spec.tolerations[0].efect"], results
    assert results[3]["errors"] == ["unknown field spec.endpoints[0].intervl"], results


@pytest.mark.parametrize("label", list(RENDERS) + list(SCHEMA_ONLY))
def test_manifests_pass_strict_kubernetes_schema(renders, node_modules, label):
    results = validate_k8s(node_modules, renders[label])
    bad = [r for r in results if r["errors"]]
    assert not bad, f"{label}: {bad}"


# --- the tpt config inside -------------------------------------------------------------


def knows_transparent(tpt_bin, tmp_path):
    """True when this tpt build has SPEC §11's data path (`transparent: true` servers); until
    then a config with a transparent server cannot pass --check-config."""
    probe = tmp_path / "transparent-probe.yaml"
    probe.write_text('servers:\n  t:\n    listen: ["127.0.0.1:15001"]\n    transparent: true\n'
                     '    default: original\n')
    return subprocess.run([str(tpt_bin), "-t", "-c", str(probe)], capture_output=True,
                          timeout=30).returncode == 0


def check_config(tpt_bin, path):
    if "transparent: true" in path.read_text() and not knows_transparent(tpt_bin, path.parent):
        pytest.skip("tpt -t does not accept `transparent` yet (SPEC §11 data path not built in)")
    env = {"PATH": "/usr/bin:/bin", **CONFIG_ENV}
    proc = subprocess.run([str(tpt_bin), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0, f"{path}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "configuration OK" in proc.stdout + proc.stderr


def with_secret_files(text, pod_spec, container, tmp_path, secrets=SECRETS):
    """The config text with every Secret volume's mountPath replaced by a local directory
    holding that Secret's keys (as files, like the kubelet's mount)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        secret = (volumes.get(m["name"]) or {}).get("secret")
        if not secret:
            continue
        assert "subPath" not in m, "a subPath mount never sees a rotated Secret"
        local = tmp_path / f"secret-{m['name']}"
        local.mkdir(exist_ok=True)
        for (name, key), value in secrets.items():
            if name == secret["secretName"]:
                (local / key).write_text(value + "\n")
        text = text.replace(m["mountPath"], str(local))
    return text


def effective_config(label, docs):
    """The tpt config a render's pods load: its ConfigMap's, or, with existingConfigMap, the
    `config` values the chart derives ports, probes and the grace period from."""
    configs = tpt_configs(docs)
    if configs:
        [(_, config, _)] = configs
        return config
    assert label == EXISTING_CONFIGMAP, f"{label}: no tpt ConfigMap"
    return yaml.safe_load((CHART / "ci" / "existing-configmap-values.yaml").read_text())["config"]


@pytest.mark.parametrize("label", [lbl for lbl in RENDERS if lbl != EXISTING_CONFIGMAP])
def test_rendered_config_passes_check_config(renders, tpt_bin, tmp_path, label):
    [(_, _, text)] = tpt_configs(renders[label])
    for _, template, found in workloads_with_tpt(renders[label]):
        text = with_secret_files(text, template["spec"], found[0][1], tmp_path)
    path = tmp_path / "tpt.yaml"
    path.write_text(text)
    check_config(tpt_bin, path)


def test_image_config_passes_check_config(tpt_bin):
    check_config(tpt_bin, IMAGE_CONFIG)


# --- SPEC §10 guarantees -----------------------------------------------------------------


@pytest.mark.parametrize("label", list(RENDERS))
def test_no_subpath_anywhere(renders, label):
    for doc in renders[label]:
        hits = [p for p, k, _ in walk(doc) if k in ("subPath", "subPathExpr")]
        assert not hits, f"{label}: {doc['kind']}/{doc['metadata']['name']} uses subPath at {hits}"


@pytest.mark.parametrize("label", list(RENDERS))
def test_config_is_mounted_as_directory_from_the_rendered_configmap(renders, label):
    docs = renders[label]
    configs = tpt_configs(docs)
    cm_name = configs[0][0] if configs else "my-tpt-config"  # existingConfigMap
    for _, template, found in workloads_with_tpt(docs):
        volumes = {v["name"]: v for v in template["spec"].get("volumes") or []}
        for _, c in found:
            args = c["args"]
            assert args[args.index("/etc/tpt/tpt.yaml") - 1] in ("--config", "-c")
            mounts = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/etc/tpt"]
            assert len(mounts) == 1, f"{label}: /etc/tpt not mounted once: {c.get('volumeMounts')}"
            assert mounts[0].get("readOnly") is True
            volume = volumes[mounts[0]["name"]]
            assert volume.get("configMap", {}).get("name") == cm_name, volume


@pytest.mark.parametrize("label", list(RENDERS))
def test_tpt_container_is_hardened(renders, label):
    for d, template, found in workloads_with_tpt(renders[label]):
        pod_sc = template["spec"].get("securityContext") or {}
        for _, c in found:
            sc = c.get("securityContext") or {}
            where = f"{label}: {d['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid!r}"
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), where
            assert not (sc.get("capabilities") or {}).get("add"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            assert sc.get("privileged") in (None, False), where


@pytest.mark.parametrize("label", list(RENDERS))
def test_probes_use_the_named_admin_port_of_the_config(renders, label):
    docs = renders[label]
    config = effective_config(label, docs)
    admin_listen = (config.get("admin") or {}).get("listen", "0.0.0.0:9901")
    admin_port = int(admin_listen.rsplit(":", 1)[1])
    for _, _, found in workloads_with_tpt(docs):
        for _, c in found:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            ready = c["readinessProbe"]["httpGet"]
            live = c["livenessProbe"]["httpGet"]
            assert ready["path"] == "/ready" and live["path"] == "/healthz"
            assert ready["port"] == live["port"] == "admin"
            assert ports.get(ready["port"]) == admin_port, (ports, admin_port)


@pytest.mark.parametrize("label", list(RENDERS))
def test_grace_period_exceeds_shutdown_delay_plus_drain(renders, label):
    docs = renders[label]
    config = effective_config(label, docs)
    shutdown = config.get("shutdown") or {}
    needed = duration_seconds(shutdown.get("delay", "0s")) + duration_seconds(
        shutdown.get("drain_timeout", "30s"))
    for d, template, _ in workloads_with_tpt(docs):
        grace = template["spec"].get("terminationGracePeriodSeconds")
        assert grace is not None, f"{label}: {d['metadata']['name']} relies on the 30 s default"
        assert grace > needed, f"{label}: grace {grace} <= delay + drain {needed}"
        lifecycle = [c.get("lifecycle") for _, c in tpt_containers(template["spec"])]
        assert not any(lc and lc.get("preStop") for lc in lifecycle), "no preStop sleep needed"


def test_grace_period_follows_the_config(helm):
    text = run([helm, "template", "rel", CHART, "--set", "config.shutdown.delay=10s",
                "--set", "config.shutdown.drain_timeout=2m"]).stdout
    [(_, template, _)] = workloads_with_tpt(parse_manifests(text, "grace"))
    assert template["spec"]["terminationGracePeriodSeconds"] == 10 + 120 + 5


@pytest.mark.parametrize("sets, message", [
    (["--set", "terminationGracePeriodSeconds=30"], "must exceed"),
    (["--set", "config.shutdown.drain_timeout=0s"], "drain_timeout is 0s"),
    (["--set", "config.admin.listen=127.0.0.1:9901"], "loopback"),
    (["--set", "config.admin.listen="], "admin.listen is empty"),
    (["-f", str(CHART / "ci" / "sidecar-values.yaml"), "--set", "podMonitor.selector=null"],
     "podMonitor.selector is required"),
    (["-f", str(CHART / "ci" / "sidecar-values.yaml"), "--set", "serviceMonitor.enabled=true"],
     "use podMonitor"),
])
def test_chart_refuses_inconsistent_settings(helm, sets, message):
    assert message in helm_template_fails(helm, *sets)


def pod_annotations(docs):
    [(_, template, _)] = workloads_with_tpt(docs)
    return template["metadata"].get("annotations") or {}


@pytest.mark.parametrize("label", [lbl for lbl in RENDERS if lbl not in (
    *SIDECAR_MODE, "chart/roll-on-config-change-values")])
def test_hot_reload_by_default_no_checksum_annotation(renders, label):
    annotations = pod_annotations(renders[label])
    assert not [k for k in annotations if "checksum" in k], annotations


def test_roll_on_config_change_adds_the_config_checksum(renders, helm):
    docs = renders["chart/roll-on-config-change-values"]
    [(_, _, text)] = tpt_configs(docs)
    annotations = pod_annotations(docs)
    # The sha256 of the mounted file: the same value as tpt_config_info{sha256}.
    assert annotations.get("checksum/tpt-config") == hashlib.sha256(text.encode()).hexdigest()
    changed = run([helm, "template", "rel", CHART, "--set", "rollOnConfigChange=true",
                   "--set", "config.log=debug"]).stdout
    other = pod_annotations(parse_manifests(changed, "changed"))["checksum/tpt-config"]
    assert other != annotations["checksum/tpt-config"]


def test_roll_on_config_change_reaches_a_parent_pod(helm, parent_chart):
    text = run([helm, "template", "rel", parent_chart, "--set",
                "tpt.rollOnConfigChange=true"]).stdout
    assert "checksum/tpt-config" in pod_annotations(parse_manifests(text, "parent-roll"))


def test_kustomize_configmaps_keep_their_name_for_hot_reload(renders):
    for label in (lbl for lbl in RENDERS if lbl.startswith("kustomize/")):
        [(name, _, _)] = tpt_configs(renders[label])
        assert name == "tpt-config", f"{label}: a hash suffix ({name}) would defeat hot reload"


def sidecar_placement(docs):
    [(_, template, found)] = workloads_with_tpt(docs)
    return template["spec"], found


@pytest.mark.parametrize("label", ["parent/classic", "kustomize/base",
                                   "kustomize/corporate-proxy"])
def test_classic_sidecar_is_an_extra_container(renders, label):
    spec, found = sidecar_placement(renders[label])
    assert [w for w, _ in found] == ["containers"]
    assert "restartPolicy" not in found[0][1]
    assert len(spec["containers"]) >= 2, "the app and tpt share the pod"


@pytest.mark.parametrize("label", ["parent/native", "kustomize/native-sidecar"])
def test_native_sidecar_is_a_restartable_init_container(renders, label):
    spec, found = sidecar_placement(renders[label])
    assert [w for w, _ in found] == ["initContainers"]
    assert found[0][1]["restartPolicy"] == "Always"
    # The kubelet gates the app's start on a native sidecar's startup probe.
    startup = found[0][1]["startupProbe"]["httpGet"]
    assert startup == {"path": "/ready", "port": "admin"}
    assert all(not is_tpt(c) for c in spec["containers"])
    assert spec["containers"], "the app container stays"


def test_native_sidecar_needs_kubernetes_1_29(helm, parent_chart):
    proc = run([helm, "template", "rel", parent_chart, "--set", "tpt.sidecar.native=true",
                "--kube-version", "1.28.0"], check=False)
    assert proc.returncode != 0 and "1.29" in proc.stderr
    run([helm, "template", "rel", parent_chart, "--set", "tpt.sidecar.native=true",
         "--kube-version", "1.29.0"])


def test_sidecar_mode_renders_configmap_podmonitor_and_check_only(renders):
    docs = renders["chart/sidecar-values"]
    assert sorted(d["kind"] for d in docs if not is_hook(d)) == ["ConfigMap", "PodMonitor"]
    assert sorted(hooks(docs)) == ["ConfigMap", "Job"], "the config check runs in sidecar mode too"
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "myapp"}}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_parent_volume_points_at_the_subchart_configmap(renders):
    for label in ("parent/classic", "parent/native"):
        docs = renders[label]
        [(cm_name, _, _)] = tpt_configs(docs)
        assert cm_name == "rel-tpt-config"
        image = sidecar_placement(docs)[1][0][1]["image"]
        assert image.endswith(":0.1.0"), f"tpt's appVersion, not the parent's: {image}"


@pytest.mark.parametrize("label", ["chart/corporate-proxy-values", "kustomize/corporate-proxy"])
def test_proxy_credentials_come_from_a_secret_volume_and_env(renders, label):
    """SPEC §13: via.auth.basic reads the password from the Secret mounted as a directory
    (no subPath: a rotation reaches tpt); ${VAR}s come from the Secret through env."""
    docs = renders[label]
    [(_, config, text)] = tpt_configs(docs)
    assert not re.search(r"Basic [A-Za-z0-9+/=]{6,}", text), "a literal credential in the ConfigMap"
    assert not [d for d in docs if d["kind"] == "Secret"], "the Secret is not part of the manifests"
    [(_, template, found)] = workloads_with_tpt(docs)
    container = found[0][1]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    secret_dirs = {m["mountPath"] for m in container["volumeMounts"]
                   if volumes[m["name"]].get("secret", {}).get("secretName") ==
                   "corp-proxy-credentials" and "subPath" not in m}
    assert secret_dirs, container["volumeMounts"]
    auths = [s["via"]["auth"]["basic"] for s in config["servers"].values()
             if "auth" in (s.get("via") or {})]
    assert auths
    for basic in auths:
        assert str(Path(basic["password_file"]).parent) in secret_dirs, basic
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    env = {e["name"]: e for e in container.get("env") or []}
    for var in referenced:
        assert "secretKeyRef" in env[var]["valueFrom"], env[var]
    pools = [u for u in config["upstream"].values() if isinstance(u, dict)]
    assert pools and all(len(u["servers"]) >= 2 for u in pools)


def test_monitoring_targets_the_admin_port(renders):
    docs = renders["chart/monitoring-values"]
    by_kind = {d["kind"]: d for d in docs if not is_hook(d)}
    admin_ports = [p for p in by_kind["Service"]["spec"]["ports"] if p["name"] == "admin"]
    assert admin_ports and admin_ports[0]["port"] == 9000 and admin_ports[0]["targetPort"] == "admin"
    monitor = by_kind["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # ServiceMonitor options of the best charts: where it lives, the job name, labels.
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["tpt-system"]}
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["targetLabels"] == ["app.kubernetes.io/instance"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert "PodMonitor" not in by_kind
    assert by_kind["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1, "selector": monitor["spec"]["selector"]}
    assert not [k for k in pod_annotations(docs) if k.startswith("prometheus.io/")], \
        "the ServiceMonitor replaces the scrape annotations"
    # Every non-loopback listener is a Service port; the loopback one is not.
    service_ports = {p["port"] for p in by_kind["Service"]["spec"]["ports"]}
    assert service_ports == {9000, 8443, 8080}


def test_values_carry_the_observability_keys():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"] == {"enabled": False, "namespace": "", "labels": {},
                                        "additionalRuleLabels": {}}
    assert values["grafanaDashboard"] == {"enabled": False, "namespace": "",
                                          "labels": {"grafana_dashboard": "1"}, "annotations": {}}
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in ("prometheusRule", "grafanaDashboard"):
        assert schema["properties"][key]["additionalProperties"] is False
        assert set(schema["properties"][key]["properties"]) == set(values[key])


def render_notes(helm, tmp_path, *args):
    """NOTES.txt is not rendered by `helm template` and `helm install --dry-run` needs a
    cluster: render the same text through a scratch copy where it is a named template."""
    chart = tmp_path / "tpt"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "tpt.test.notes" -}}\n' + notes + '\n{{- end -}}\n')
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  notes: {{ include \"tpt.test.notes\" . | toJson }}\n")
    text = run([helm, "template", "rel", chart, "--show-only", "templates/notes-check.yaml",
                *args]).stdout
    return yaml.safe_load(text)["data"]["notes"]


def test_notes_render_for_both_modes(helm, tmp_path):
    notes = render_notes(helm, tmp_path, "-f", str(CHART / "ci" / "example-server-values.yaml"))
    assert "port-forward service/rel-tpt 9901:9901" in notes
    assert "Hot reload" in notes and "rel-tpt-config" in notes
    sidecar = render_notes(helm, tmp_path / "s", "-f", str(CHART / "ci" / "sidecar-values.yaml"))
    assert 'include "tpt.sidecarContainer"' in sidecar


def test_sidecar_helpers_work_with_an_aliased_dependency(helm, tmp_path):
    """A parent that aliases the dependency passes (dict "root" $ "values" .Values.<alias>)."""
    parent = tmp_path / "aliased"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "tpt", ignore=shutil.ignore_patterns("ci"))
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: aliased\nversion: 0.1.0\n"
        "dependencies:\n  - name: tpt\n    version: 0.1.0\n    alias: egress\n")
    (parent / "values.yaml").write_text(
        "egress:\n  mode: sidecar\n  sidecar: {native: true, containerName: egress}\n")
    (parent / "templates" / "pod.yaml").write_text(
        '{{- $t := dict "root" $ "values" .Values.egress }}\n'
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n"
        "  terminationGracePeriodSeconds: "
        '{{ include "tpt.sidecarTerminationGracePeriodSeconds" $t }}\n'
        "  initContainers:\n"
        '    {{- include "tpt.sidecarContainer" $t | nindent 4 }}\n'
        "  containers:\n    - name: app\n      image: app\n"
        "  volumes:\n"
        '    {{- include "tpt.sidecarVolume" $t | nindent 4 }}\n')
    docs = parse_manifests(run([helm, "template", "rel", parent]).stdout, "aliased")
    [(cm_name, _, _)] = tpt_configs(docs)
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["name"] == "egress" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "ghcr.io/tpt-proxy/tpt:0.1.0"
    [volume] = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == cm_name
    assert [m["name"] for m in sidecar["volumeMounts"]] == [volume["name"]]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 40


# --- round two: what a user meets installing and upgrading --------------------------------
# One group per defect of the issue; each test fails on the chart before the fix.


def chart_meta():
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def github_repository():
    """owner/name of the repository that publishes the image and the chart (Chart.yaml)."""
    [source] = chart_meta()["sources"]
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", source)
    assert m, source
    return m.group(1)


def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def workflow_expand(text):
    """A workflow expression as it evaluates for the repository named in Chart.yaml."""
    owner = github_repository().split("/")[0]
    return (text.replace("${{ github.repository }}", github_repository())
            .replace("${{ github.repository_owner }}", owner))


def pod_images(docs):
    return [c["image"] for _, template in pod_specs(docs)
            for where in ("containers", "initContainers")
            for c in template["spec"].get(where) or [] if is_tpt(c)]


# 1. The default image can be pulled: it is the one the workflow publishes.

def test_default_image_is_the_one_the_workflow_publishes(helm, renders):
    published = workflow_expand(workflow()["env"]["IMAGE"])
    assert published == "ghcr.io/tpt-proxy/tpt"
    app_version = chart_meta()["appVersion"]
    for label in ("chart/default-values", "chart/example-server-values", "parent/classic",
                  "parent/native", "kustomize/base", "kustomize/native-sidecar"):
        images = pod_images(renders[label])
        assert images and set(images) == {f"{published}:{app_version}"}, (label, images)
    # The hook Job runs the same image as the pods.
    [job] = [d for d in renders["chart/default-values"] if d["kind"] == "Job"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"{published}:0.1.0"


def test_image_registry_global_registry_and_whole_references(helm):
    def image(*sets):
        docs = template(helm, *[a for s in sets for a in ("--set", s)])
        [img] = set(pod_images(docs))
        return img
    assert image("global.imageRegistry=mirror.example.com") == "mirror.example.com/tpt-proxy/tpt:0.1.0"
    assert image("image.registry=registry.example.com", "image.repository=platform/tpt",
                 "image.tag=1.2.3") == "registry.example.com/platform/tpt:1.2.3"
    # A repository that already names its registry (the pre-registry form) is kept whole.
    assert image("image.repository=registry.example.com/platform/tpt") == \
        "registry.example.com/platform/tpt:0.1.0"
    assert image("image.registry=", "image.repository=tpt", "image.tag=ci") == "tpt:ci"
    docs = template(helm, "--set", "global.imagePullSecrets[0]=mirror-pull",
                    "--set", "imagePullSecrets[0].name=own")
    [(_, template_, _)] = workloads_with_tpt(docs)
    assert template_["spec"]["imagePullSecrets"] == [{"name": "own"}, {"name": "mirror-pull"}]


# 2. A route removed from the values is removed by `helm upgrade --reuse-values -f new.yaml`.
#
# `helm upgrade --reuse-values -f new.yaml` computes the release's values as
# chartutil.CoalesceTables(new, previous user values): a deep merge where the new file wins,
# the same merge `helm template -f previous.yaml -f new.yaml` does for two files
# (pkg/cli/values mergeMaps). So rendering with both files shows what the upgrade applies,
# without a cluster.

OLD_ROUTES = {"www.example.com": "example_com", "old.example.com": "example_com"}
NEW_ROUTES = {"www.example.com": "example_com"}


def routes_values(tmp_path, name, routes, as_text):
    config = {"servers": {"proxy": {"listen": ["0.0.0.0:8443"], "tls": True,
                                    "sni": routes, "default": "ban"}},
              "upstream": {"example_com": "tcp://www.example.com:443"}}
    path = tmp_path / f"{name}.yaml"
    if as_text:
        path.write_text(yaml.safe_dump({"configText": yaml.safe_dump(config)}))
    else:
        path.write_text(yaml.safe_dump({"config": config}))
    return path


def rendered_routes(docs):
    [(_, config, _)] = tpt_configs(docs)
    return config["servers"]["proxy"]["sni"]


def test_route_removed_from_config_text_is_gone_after_reuse_values_upgrade(helm, tmp_path):
    old = routes_values(tmp_path, "old", OLD_ROUTES, as_text=True)
    new = routes_values(tmp_path, "new", NEW_ROUTES, as_text=True)
    assert rendered_routes(template(helm, "-f", old)) == OLD_ROUTES      # helm install
    assert rendered_routes(template(helm, "-f", old, "-f", new)) == NEW_ROUTES  # --reuse-values


def test_route_removed_from_the_config_map_needs_the_complete_values(helm, tmp_path):
    old = routes_values(tmp_path, "old", OLD_ROUTES, as_text=False)
    new = routes_values(tmp_path, "new", NEW_ROUTES, as_text=False)
    # What the README says not to do: with a map, --reuse-values keeps the old route...
    assert rendered_routes(template(helm, "-f", old, "-f", new)) == OLD_ROUTES
    # ...what it says to do: upgrade with the complete values file, without --reuse-values.
    assert rendered_routes(template(helm, "-f", new)) == NEW_ROUTES
    docs = (REPO / "README.md").read_text() + (REPO / "docs" / "kubernetes.md").read_text() \
        + (CHART / "README.md").read_text()
    # As a command to run (a line of a code block), not where the trap is explained.
    assert not re.search(r"^\s*helm upgrade[^\n`]*--reuse-values -f new-routes", docs, re.M), \
        "the docs still suggest an upgrade that cannot remove a route"


def test_config_text_and_config_servers_are_exclusive(helm, tmp_path):
    text = routes_values(tmp_path, "text", NEW_ROUTES, as_text=True)
    err = helm_template_fails(helm, "-f", text, "--set", "config.servers.x.listen=[::]:1")
    assert "configText and config.servers are both set" in err
    err = helm_template_fails(helm, "--set", "configText=[not: yaml")
    assert "configText is not a YAML map" in err


# 3. Labels the chart also sets are merged, not written twice.

def test_labels_that_the_chart_also_sets_are_merged_as_dicts(helm):
    docs = template(helm, "--set", "commonLabels.app\\.kubernetes\\.io/part-of=egress",
                    "--set", "commonLabels.app\\.kubernetes\\.io/component=gateway",
                    "--set", "podLabels.app\\.kubernetes\\.io/version=pinned",
                    "--set", "service.labels.app\\.kubernetes\\.io/component=frontdoor",
                    "--set", "serviceMonitor.enabled=true",
                    "--set", "serviceMonitor.labels.app\\.kubernetes\\.io/managed-by=team",
                    "--set", "prometheusRule.enabled=true",
                    "--set", "prometheusRule.labels.app\\.kubernetes\\.io/part-of=alerts",
                    "--set", "grafanaDashboard.enabled=true",
                    "--set", "grafanaDashboard.labels.app\\.kubernetes\\.io/component=dash")
    # parse_manifests refuses duplicate keys: reaching here means every mapping is valid.
    labels = {d["kind"] + ("/" + d["metadata"]["name"]): d["metadata"]["labels"] for d in docs}
    assert labels["Deployment/rel-tpt"]["app.kubernetes.io/part-of"] == "egress"
    assert labels["Deployment/rel-tpt"]["app.kubernetes.io/component"] == "gateway"
    assert labels["Service/rel-tpt"]["app.kubernetes.io/component"] == "frontdoor"
    assert labels["ServiceMonitor/rel-tpt"]["app.kubernetes.io/managed-by"] == "team"
    assert labels["PrometheusRule/rel-tpt"]["app.kubernetes.io/part-of"] == "alerts"
    assert labels["ConfigMap/rel-tpt-dashboard"]["app.kubernetes.io/component"] == "dash"
    [(_, template_, _)] = workloads_with_tpt(docs)
    pod_labels = template_["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/version"] == "pinned"
    assert pod_labels["app.kubernetes.io/component"] == "gateway"
    assert {k: pod_labels[k] for k in SELECTOR_LABELS} == {
        "app.kubernetes.io/name": "tpt", "app.kubernetes.io/instance": "rel"}


@pytest.mark.parametrize("key", ["commonLabels", "podLabels"])
def test_selector_labels_cannot_be_changed(helm, key):
    err = helm_template_fails(helm, "--set", f"{key}.app\\.kubernetes\\.io/name=other")
    assert "app.kubernetes.io/name is the chart's selector label" in err
    # The same value is no conflict.
    template(helm, "--set", f"{key}.app\\.kubernetes\\.io/name=tpt")


# 4. TptTargetDown fires for the chart's default scraping and for an app Service's monitor.

TARGET_DOWN_TEST = """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # The chart's default: pod annotations, discovered by the kubernetes-pods job.
      - series: 'up{job="kubernetes-pods", instance="10.0.0.1:9901", namespace="ns", pod="rel-tpt-0"}'
        values: '1x2 0x10'
      - series: 'tpt_build_info{job="kubernetes-pods", instance="10.0.0.1:9901", namespace="ns", pod="rel-tpt-0", version="0.1.0"}'
        values: '1x2 _x10'
      # A ServiceMonitor on the kustomize base's Service (job = the Service's name).
      - series: 'up{job="example-app", instance="10.0.0.2:9901", namespace="ns", pod="example-app-0"}'
        values: '1x2 0x10'
      - series: 'tpt_build_info{job="example-app", instance="10.0.0.2:9901", namespace="ns", pod="example-app-0", version="0.1.0"}'
        values: '1x2 _x10'
      # The chart's PodMonitor job of a pod that never answered.
      - series: 'up{job="ns/rel-tpt", instance="10.0.0.3:9901", namespace="ns", pod="rel-tpt-1"}'
        values: '0x12'
      # Not tpt: another target of the annotations job that is down.
      - series: 'up{job="kubernetes-pods", instance="10.0.0.4:8080", namespace="ns", pod="web-0"}'
        values: '0x12'
    alert_rule_test:
      - eval_time: 10m
        alertname: TptTargetDown
        exp_alerts:
          - exp_labels: {severity: critical, job: kubernetes-pods, instance: "10.0.0.1:9901", namespace: ns, pod: rel-tpt-0}
          - exp_labels: {severity: critical, job: example-app, instance: "10.0.0.2:9901", namespace: ns, pod: example-app-0}
          - exp_labels: {severity: critical, job: ns/rel-tpt, instance: "10.0.0.3:9901", namespace: ns, pod: rel-tpt-1}
"""


def test_target_down_alert_matches_the_default_scraping(helm, tmp_path):
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing (scripts/deps.sh test installs prometheus)")
    docs = template(helm, "--set", "prometheusRule.enabled=true")
    # The default scraping is the annotations, whose job name is not tpt's to choose.
    [(_, template_, _)] = workloads_with_tpt(docs)
    assert template_["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    [rule] = by_kind(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:  # only the alert under test, without its annotations' templates
        group["rules"] = [{k: v for k, v in r.items() if k != "annotations"}
                          for r in group["rules"] if r.get("alert") == "TptTargetDown"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "test.yaml").write_text(TARGET_DOWN_TEST)
    proc = run(["promtool", "test", "rules", "test.yaml"], check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# 5. prometheusRule.* and grafanaDashboard.* refuse unknown keys: see
#    test_values_schema_rejects_bad_values[prometheusrule-typo|dashboard-typo|...] and
#    test_values_carry_the_observability_keys.


# 6. A bad config fails `helm install/upgrade` at the pre-install/pre-upgrade check.

def container_env(container, secrets):
    """The environment the kubelet gives a container: env values, secretKeyRef and
    envFrom secretRef entries resolved from `secrets` ({(secret, key): value}); an entry
    whose Secret or key is missing is left out (the kubelet would not start the pod)."""
    env = {}
    for ref in container.get("envFrom") or []:
        name = (ref.get("secretRef") or {}).get("name")
        env.update({k: v for (s, k), v in secrets.items() if s == name})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[e["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def run_config_check_hook(docs, tpt_bin, tmp_path, secrets):
    """Runs the rendered hook Job's container command with the local tpt binary: its hook
    ConfigMap laid out as the mounted directory, its env resolved like the kubelet's."""
    found = hooks(docs)
    assert set(found) == {"ConfigMap", "Job"}, found
    job, config_map = found["Job"], found["ConfigMap"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/tpt"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    mounted = tmp_path / "etc-tpt"
    mounted.mkdir()
    for key, text in config_map["data"].items():
        (mounted / key).write_text(with_secret_files(text, pod, container, tmp_path, secrets))
    args = [str(a).replace(mount["mountPath"], str(mounted)) for a in container["args"]]
    env = {"PATH": "/usr/bin:/bin", **container_env(container, secrets)}
    return subprocess.run([str(tpt_bin), *args], capture_output=True, text=True, timeout=30,
                          env=env)


def test_config_check_is_a_pre_install_pre_upgrade_hook_with_the_pods_image_and_env(renders):
    docs = renders["chart/corporate-proxy-values"]
    found = hooks(docs)
    job, config_map = found["Job"], found["ConfigMap"]
    for doc in (job, config_map):
        assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    weight = {k: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, d in found.items()}
    assert weight["ConfigMap"] < weight["Job"], "the config copy exists before the Job starts"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    [(_, _, text)] = tpt_configs(docs)
    assert config_map["data"] == {"tpt.yaml": text}, "the check sees the config the pods get"
    [check] = job["spec"]["template"]["spec"]["containers"]
    [(_, _, [(_, proxy)])] = workloads_with_tpt(docs)
    assert check["image"] == proxy["image"]
    assert check.get("env") == proxy.get("env") and check.get("envFrom") == proxy.get("envFrom")
    assert check["args"][:1] == ["--check-config"]
    assert check["securityContext"] == proxy["securityContext"]
    # Deleted once passed; a failed Job stays for `kubectl logs` until the next attempt.
    assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == \
        "before-hook-creation,hook-succeeded"


def test_config_check_passes_a_good_config(renders, tpt_bin, tmp_path):
    proc = run_config_check_hook(renders["chart/corporate-proxy-values"], tpt_bin, tmp_path, SECRETS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "configuration OK" in proc.stdout + proc.stderr


@pytest.mark.parametrize("sets, error", [
    (["--set", "config.servers.proxy.default=nowhere"], "nowhere"),
    (["-f", str(CHART / "ci" / "corporate-proxy-values.yaml"), "--set", "env=null"],
     "PROXY_USER"),
], ids=["unknown-upstream", "var-without-env"])
def test_config_check_fails_a_bad_config_with_tpts_error(helm, tpt_bin, tmp_path, sets, error):
    base = ["--set", "config.servers.proxy.listen=0.0.0.0:8443"] if "env=null" not in sets else []
    docs = template(helm, *base, *sets)
    proc = run_config_check_hook(docs, tpt_bin, tmp_path, SECRETS)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert error in output and "tpt.yaml" in output, output
    print(f"hook Job command failed as `helm upgrade` would report it:\n{output}")


def test_config_check_can_be_switched_off(helm):
    assert not hooks(template(helm, "--set", "configCheck.enabled=false"))


# 7. A ConfigMap that users edit themselves: existingConfigMap.

def test_existing_configmap_is_mounted_and_never_rendered(renders):
    docs = renders[EXISTING_CONFIGMAP]
    assert not [d for d in docs if d["kind"] == "ConfigMap"], "Helm must not own that ConfigMap"
    assert not hooks(docs), "no config of the release to check"
    [(_, template_, [(_, container)])] = workloads_with_tpt(docs)
    [volume] = template_["spec"]["volumes"]
    assert volume["configMap"]["name"] == "my-tpt-config"
    assert container["args"][:2] == ["--config", "/etc/tpt/tpt.yaml"]
    assert {p["containerPort"] for p in container["ports"]} == {9901, 8443}


def test_existing_configmap_key_names_the_file(helm):
    docs = template(helm, "--set", "existingConfigMap=mine", "--set", "existingConfigMapKey=proxy.yaml")
    [(_, _, [(_, container)])] = workloads_with_tpt(docs)
    assert container["args"][:2] == ["--config", "/etc/tpt/proxy.yaml"]


def test_notes_and_docs_send_edits_of_the_helm_configmap_to_helm(helm, tmp_path):
    notes = render_notes(helm, tmp_path, "-f", str(CHART / "ci" / "example-server-values.yaml"))
    assert "kubectl apply` the ConfigMap" not in notes and "kubectl edit" in notes
    assert "existingConfigMap" in notes and "--check-config" in notes
    mine = render_notes(helm, tmp_path / "e", "--set", "existingConfigMap=mine")
    assert "your ConfigMap mine" in mine and "Helm never writes it" in mine
    guide = (REPO / "docs" / "kubernetes.md").read_text()
    assert "existingConfigMap" in guide


# 8. One scrape mechanism at a time.

def scrape_mechanisms(docs):
    """How many ways the tpt pods of a render are scraped: annotations, a ServiceMonitor
    selecting their Service, a PodMonitor selecting them."""
    found = []
    for _, template_, _ in workloads_with_tpt(docs):
        labels = template_["metadata"].get("labels") or {}
        if (template_["metadata"].get("annotations") or {}).get("prometheus.io/scrape") == "true":
            found.append("annotations")
        for monitor in by_kind(docs, "PodMonitor"):
            want = monitor["spec"]["selector"].get("matchLabels") or {}
            if all(labels.get(k) == v for k, v in want.items()):
                found.append("PodMonitor")
        for monitor in by_kind(docs, "ServiceMonitor"):
            want = monitor["spec"]["selector"].get("matchLabels") or {}
            for service in by_kind(docs, "Service"):
                svc_labels = service["metadata"].get("labels") or {}
                selects_pods = all(labels.get(k) == v
                                   for k, v in service["spec"]["selector"].items())
                if selects_pods and all(svc_labels.get(k) == v for k, v in want.items()):
                    found.append("ServiceMonitor")
    return found


@pytest.mark.parametrize("label", [lbl for lbl in RENDERS if lbl.startswith("chart/")])
def test_each_render_scrapes_its_pods_once(renders, label):
    assert len(scrape_mechanisms(renders[label])) <= 1, (label, scrape_mechanisms(renders[label]))


@pytest.mark.parametrize("sets, expected", [
    ([], ["annotations"]),
    (["serviceMonitor.enabled=true"], ["ServiceMonitor"]),
    (["podMonitor.enabled=true"], ["PodMonitor"]),
    (["metrics.podAnnotations=false"], []),
])
def test_one_scrape_mechanism_at_a_time(helm, sets, expected):
    docs = template(helm, *[a for s in sets for a in ("--set", s)])
    assert scrape_mechanisms(docs) == expected


def test_both_monitors_are_refused(helm):
    err = helm_template_fails(helm, "--set", "serviceMonitor.enabled=true",
                              "--set", "podMonitor.enabled=true")
    assert "choose one" in err


def test_pod_monitor_options(renders):
    [monitor] = by_kind(renders["chart/podmonitor-values"], "PodMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is False
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# 9. The admin server answers probes on IPv4 and IPv6 by default.

def test_admin_listens_on_both_address_families_by_default(renders):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["config"]["admin"]["listen"] == "[::]:9901"
    for label in ("chart/default-values", "parent/classic", "kustomize/base",
                  "kustomize/corporate-proxy"):
        assert effective_config(label, renders[label])["admin"]["listen"] == "[::]:9901", label
    assert yaml.safe_load(IMAGE_CONFIG.read_text())["admin"]["listen"] == "[::]:9901"


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_admin_on_the_ipv6_wildcard_answers_both_families(tpt):
    """What the kubelet does on an IPv4-only and on an IPv6-only cluster: GET /ready on the
    pod address of either family, against the chart's default admin listen address."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    port = None
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        port = s.getsockname()[1]
    proc = tpt(f'version: 2\nadmin:\n  listen: "[::]:{port}"\nservers: {{}}\n')
    for url in (f"http://127.0.0.1:{port}/ready", f"http://[::1]:{port}/ready"):
        status, _, body = http_get(url)
        assert (status, body) == (200, b"ready"), url
    proc.stop()


# --- what the best charts give: NetworkPolicy, anti-affinity, PDB, README, OCI chart ------

def test_network_policy_is_on_by_default(renders):
    docs = renders["chart/example-server-values"]
    [policy] = by_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "tpt",
                                                  "app.kubernetes.io/instance": "rel"}
    assert spec["policyTypes"] == ["Ingress"]
    admin, proxy = spec["ingress"]
    assert admin["ports"] == [{"port": 9901, "protocol": "TCP"}]
    assert admin["from"] == [{"namespaceSelector": {},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert proxy == {"ports": [{"port": 8443, "protocol": "TCP"}]}, "allowExternal: from anyone"


def test_network_policy_limits_the_proxy_ports_to_chosen_clients(renders):
    [policy] = by_kind(renders["chart/monitoring-values"], "NetworkPolicy")
    admin, proxy = policy["spec"]["ingress"]
    assert admin["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert {p["port"] for p in proxy["ports"]} == {8443, 8080}
    assert proxy["from"] == [
        {"podSelector": {"matchLabels": {"rel-tpt-client": "true"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}}}]


def test_network_policy_egress_when_closed(renders):
    [policy] = by_kind(renders["chart/podmonitor-values"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, extra = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert extra["to"] == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]


def test_network_policy_only_in_deployment_mode(renders, helm):
    assert not by_kind(renders["chart/sidecar-values"], "NetworkPolicy")
    assert not by_kind(template(helm, "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_soft_pod_anti_affinity_by_default(helm, renders):
    [(_, template_, _)] = workloads_with_tpt(renders["chart/default-values"])
    [term] = template_["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tpt", "app.kubernetes.io/instance": "rel"}
    [(_, hard, _)] = workloads_with_tpt(renders["chart/podmonitor-values"])
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["spec"]["affinity"][
        "podAntiAffinity"]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["egress"]}]}]}}}
    docs = template(helm, "--set-json", f"affinity={json.dumps(own)}")
    [(_, template_, _)] = workloads_with_tpt(docs)
    assert template_["spec"]["affinity"] == own, "affinity replaces the preset"
    [(_, template_, _)] = workloads_with_tpt(template(helm, "--set", "podAntiAffinityPreset="))
    assert "affinity" not in template_["spec"]


@pytest.mark.parametrize("sets, spec", [
    ([], {"maxUnavailable": 1}),
    (["replicaCount=1"], None),
    (["replicaCount=1", "podDisruptionBudget.enabled=true"], {"maxUnavailable": 1}),
    (["podDisruptionBudget.enabled=false"], None),
    (["replicaCount=3", "podDisruptionBudget.minAvailable=2"], {"minAvailable": 2}),
    (["replicaCount=3", "podDisruptionBudget.minAvailable=50%"], {"minAvailable": "50%"}),
    (["replicaCount=3", "podDisruptionBudget.maxUnavailable=34%"], {"maxUnavailable": "34%"}),
])
def test_pdb_on_with_more_than_one_replica(helm, sets, spec):
    docs = template(helm, *[a for s in sets for a in ("--set", s)])
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if spec is None:
        assert not pdbs
        return
    [pdb] = pdbs
    assert {k: v for k, v in pdb["spec"].items() if k != "selector"} == spec
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "tpt",
                                                      "app.kubernetes.io/instance": "rel"}


@pytest.mark.parametrize("sets", [
    ["podDisruptionBudget.minAvailable=2"],
    ["podDisruptionBudget.maxUnavailable=0"],
    ["podDisruptionBudget.maxUnavailable=0%"],
    ["replicaCount=3", "podDisruptionBudget.minAvailable=3"],
    ["replicaCount=3", "podDisruptionBudget.minAvailable=100%"],
    ["replicaCount=2", "podDisruptionBudget.minAvailable=51%"],
    ["replicaCount=1", "podDisruptionBudget.enabled=true", "podDisruptionBudget.minAvailable=1"],
])
def test_pdb_that_blocks_every_drain_is_refused(helm, sets):
    err = helm_template_fails(helm, *[a for s in sets for a in ("--set", s)])
    assert "would block every node drain" in err


def test_chart_readme_parameters_match_values():
    proc = run(["bash", REPO / "scripts" / "helm-readme.sh", "--check"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    readme = (CHART / "README.md").read_text()
    for key in ("image.registry", "global.imageRegistry", "existingConfigMap", "configText",
                "configCheck.enabled", "networkPolicy.enabled", "podAntiAffinityPreset",
                "podDisruptionBudget.enabled", "serviceMonitor.jobLabel",
                "serviceMonitor.namespace", "serviceMonitor.honorLabels",
                "serviceMonitor.targetLabels"):
        assert f"| `{key}`" in readme, key


def test_chart_is_published_as_oci_artifact_next_to_the_image():
    jobs = workflow()["jobs"]
    steps = [s.get("run", "") for s in jobs["chart"]["steps"]]
    assert any("helm package helm" in s for s in steps), steps
    [push] = [s for s in steps if "helm push" in s]
    assert 'helm push dist/tpt-*.tgz "${CHART_REPOSITORY,,}"' in push
    assert jobs["chart"]["needs"] == "push", "the chart is published after its image"
    repository = workflow_expand(workflow()["env"]["CHART_REPOSITORY"])
    assert repository == "oci://ghcr.io/tpt-proxy/charts"
    version = chart_meta()["version"]
    install = f"helm install tpt {repository}/tpt --version {version}"
    for doc in (REPO / "README.md", CHART / "README.md", REPO / "docs" / "kubernetes.md"):
        assert install in doc.read_text(), f"{doc.name} does not install the published chart"
    platforms = [s.get("with", {}).get("platforms") for s in jobs["push"]["steps"]]
    assert "linux/amd64,linux/arm64" in platforms, "the image is published for amd64 and arm64"
